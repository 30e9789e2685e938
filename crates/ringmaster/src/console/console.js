// ironwork console: swaps in the parts of the page each server-sent snapshot carries (rendered
// by ringmaster, as the page itself is), and turns each action link into a confirmation and a
// request with the token as a bearer header, kept for this tab only. Without this script the
// page still works: it refreshes itself, and an action link opens a page that asks for the
// token and a confirmation.
"use strict";
(function () {
  const live = document.getElementById("live");
  let lastEvent = 0;

  function apply(state) {
    for (const [id, html] of Object.entries(state.html || {})) {
      const el = document.getElementById(id);
      if (el) el.innerHTML = html;
    }
    document.getElementById("redis-alert").hidden = state.redis_ok !== false;
  }

  async function poll() {
    try {
      const r = await fetch("/api/state?html=1");
      if (r.ok) { apply(await r.json()); live.textContent = "refreshed"; }
    } catch (_) { live.textContent = "unreachable"; }
  }

  document.addEventListener("click", async (e) => {
    const link = e.target.closest("a.act");
    if (!link) return;
    e.preventDefault();
    const what = link.getAttribute("href").split("/").slice(2).map(decodeURIComponent).join(" ");
    if (!window.confirm(`${what}?`)) return;
    const token = sessionStorage.getItem("ironwork-token") || window.prompt("console token (var/state/console.token)") || "";
    const r = await fetch(link.getAttribute("href"), {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "text/plain" },
      body: "confirm=yes",
    });
    if (r.status === 401) { sessionStorage.removeItem("ironwork-token"); window.alert("wrong token"); return; }
    sessionStorage.setItem("ironwork-token", token);
    if (!r.ok) window.alert(await r.text());
  });

  // Server-sent events; when they stop coming (a buffering proxy, a broken stream), polling.
  if (window.EventSource) {
    const es = new EventSource("/events");
    es.addEventListener("state", (e) => {
      lastEvent = Date.now();
      apply(JSON.parse(e.data));
      live.textContent = "live";
      live.className = "on";
    });
    es.onerror = () => { live.textContent = "reconnecting…"; live.className = ""; };
  }
  setInterval(() => { if (Date.now() - lastEvent > 10000) poll(); }, 5000);
})();
