// ironwork console: swaps in the parts of the page each server-sent snapshot carries (rendered
// by ringmaster, as the page itself is), and turns the action forms into a confirmation and a
// request with the token as a bearer header, kept for this tab only. Without this script the
// page still works: it refreshes itself, and its forms post the token typed beside the button.
"use strict";
(function () {
  document.documentElement.classList.add("js");
  const live = document.getElementById("live");

  function apply(state) {
    for (const [id, html] of Object.entries(state.html || {})) {
      const el = document.getElementById(id);
      if (el) el.innerHTML = html;
    }
    document.getElementById("redis-alert").hidden = state.redis_ok !== false;
  }

  document.addEventListener("submit", async (e) => {
    const form = e.target.closest("form.act");
    if (!form) return;
    e.preventDefault();
    const what = form.getAttribute("action").split("/").slice(2).map(decodeURIComponent).join(" ");
    if (!window.confirm(`${what}?`)) return;
    const token = sessionStorage.getItem("ironwork-token") || window.prompt("console token (var/state/console.token)") || "";
    const r = await fetch(form.getAttribute("action"), {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "text/plain" },
      body: "confirm=yes",
    });
    if (r.status === 401) { sessionStorage.removeItem("ironwork-token"); window.alert("wrong token"); return; }
    sessionStorage.setItem("ironwork-token", token);
    if (!r.ok) window.alert(await r.text());
  });

  if (window.EventSource) {
    const es = new EventSource("/events");
    es.addEventListener("state", (e) => { apply(JSON.parse(e.data)); live.textContent = "live"; live.className = "on"; });
    es.onerror = () => { live.textContent = "reconnecting…"; live.className = ""; };
  } else {
    const poll = async () => { const r = await fetch("/api/state?html=1"); if (r.ok) apply(await r.json()); };
    setInterval(poll, 5000);
    live.textContent = "refreshing every 5 s";
  }
})();
