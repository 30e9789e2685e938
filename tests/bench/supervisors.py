#!/usr/bin/env python3
"""Side-by-side benchmark of three process supervisors: ringmaster, circus and supervisord.

For each tool, on the same configuration of `sleep 86400` processes, in one run:

  a. startup: seconds from launching the supervisor until 200 `sleep` descendants exist
     (20 watchers x 10 processes; /proc scanned every 1 ms);
  b. RSS of the supervisor process itself (VmRSS) after 100 processes (10 x 10) have been
     up and idle for 10 s;
  c. crash-to-respawn latency: SIGKILL a random `sleep` child, time until a new `sleep`
     child exists (/proc polled every 0.2 ms, 20 s bound per kill, kills 300 ms apart);
  d. idle CPU: utime + stime of the supervisor process over --idle-seconds of idle.

Between tools the supervisor is stopped (SIGTERM, then SIGKILL) and every process it leaves
behind is killed and counted. Results: a markdown table on stdout and target/bench-supervisors.json.

circus and supervisord come from PyPI into the virtualenv target/bench-venv (created and
filled idempotently); ringmaster is target/release/ringmaster, built first unless --no-build.
Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from benchlib import (REPO, VENV, BenchError, ensure_venv, fmt, free_tcp_ports, get, log,
                      percentile, run_meta)

JSON_OUT = REPO / "target" / "bench-supervisors.json"
RINGMASTER_BIN = REPO / "target" / "release" / "ringmaster"
SLEEP_BIN = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
SLEEP_ARGS = "86400"

# Tested together on Python 3.11 (Debian 12): circus 0.19.0 runs on the current pyzmq and
# tornado (its SIGTERM path uses tornado's deprecated add_callback_from_signal, still present).
VENV_REQUIREMENTS = (
    "circus==0.19.0",
    "supervisor==4.3.0",
    "pyzmq==27.3.0",
    "tornado==6.6.1",
    "psutil==7.2.2",
)

TOOLS = ("ringmaster", "circus", "supervisord")
STARTUP_LAYOUT = (20, 10)  # watchers x processes for metric a
STEADY_LAYOUT = (10, 10)  # watchers x processes for metrics b, c, d
CHECK_DELAY = 5
SETTLE_SECONDS = 10.0
STARTUP_SCAN_INTERVAL = 0.001
STARTUP_TIMEOUT = 120.0
RESPAWN_POLL_INTERVAL = 0.0002
RESPAWN_TIMEOUT = 20.0
KILL_SPACING = 0.3
# Victims must have run this long: killing a process again within a second of its respawn is a
# crash loop, which ringmaster (and circus's flapping plugin) pause on purpose (2 exits in 1 s).
MIN_VICTIM_AGE = 2.0
STOP_TIMEOUT = 40.0
RANDOM_SEED = 1
PR_SET_CHILD_SUBREAPER = 36
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# /proc


class ProcStat(NamedTuple):
    ppid: int
    comm: str
    state: str
    cpu_ticks: int  # utime + stime
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    close = data.rindex(b")")
    comm = data[data.index(b"(") + 1 : close].decode(errors="replace")
    fields = data[close + 2 :].split()
    return ProcStat(
        ppid=int(fields[1]),
        comm=comm,
        state=fields[0].decode(),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
    )


def scan_proc() -> dict[int, ProcStat]:
    """Every process's stat, keyed by pid."""
    table = {}
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        st = read_stat(pid)
        if st is not None:
            table[pid] = st
    return table


def live_sleeps(table: dict[int, ProcStat], pids: list[int]) -> list[int]:
    return [p for p in pids if table[p].comm == "sleep" and table[p].state != "Z"]


def descendants(table: dict[int, ProcStat], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sleep_descendants(root: int) -> list[int]:
    table = scan_proc()
    return live_sleeps(table, descendants(table, root))


def children_of(pid: int) -> list[int]:
    """Direct children of every thread of pid, from /proc/<pid>/task/<tid>/children."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
    return found


def live_sleep_children(pid: int, min_age: float = 0.0) -> list[int]:
    """Live `sleep` children of pid that have run at least min_age seconds."""
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    found = []
    for child in children_of(pid):
        st = read_stat(child)
        if (st is not None and st.comm == "sleep" and st.state != "Z"
                and uptime - st.start_ticks / CLK_TCK >= min_age):
            found.append(child)
    return found


def cpu_ns_of_threads(pid: int) -> int:
    """Time on CPU of pid's live threads in ns (first field of each task's schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def become_subreaper() -> None:
    """Orphans of the supervisors get reparented to us, so a leak cannot hide under init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: PR_SET_CHILD_SUBREAPER failed; leak check covers known pids only",
              file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Installing the tools


def ensure_ringmaster(build: bool) -> dict[str, str]:
    if build:
        log("cargo build --release -p ringmaster")
        done = subprocess.run(["cargo", "build", "--release", "-p", "ringmaster"], cwd=REPO)
        if done.returncode != 0:
            raise BenchError(f"cargo build --release -p ringmaster failed ({done.returncode})")
    if not os.access(RINGMASTER_BIN, os.X_OK):
        raise BenchError(
            f"binary not found: {RINGMASTER_BIN} "
            "(build it with `cargo build --release -p ringmaster`, or drop --no-build)"
        )
    try:
        out = subprocess.run([str(RINGMASTER_BIN), "--version"], capture_output=True,
                             text=True, timeout=10)
        version = (out.stdout.strip() or out.stderr.strip() or "unknown").split()[-1]
    except (OSError, subprocess.TimeoutExpired):
        version = "unknown"
    return {"ringmaster": version}


# --------------------------------------------------------------------------------------------
# Per-tool configuration and command line


def circus_watchers_ini(watchers: int, procs: int) -> str:
    return "".join(
        f"\n[watcher:w{i}]\ncmd = {SLEEP_BIN}\nargs = {SLEEP_ARGS}\nnumprocesses = {procs}\n"
        for i in range(watchers)
    )


def ringmaster_config(workdir: Path, watchers: int, procs: int) -> Path:
    # Streams omitted: ringmaster passes children's output through to its own, which is /dev/null.
    text = (
        "[circus]\n"
        f"endpoint = ipc://{workdir}/ringmaster.sock\n"
        f"check_delay = {CHECK_DELAY}\n"
        + circus_watchers_ini(watchers, procs)
    )
    path = workdir / "ringmaster.ini"
    path.write_text(text)
    return path


def circus_config(workdir: Path, watchers: int, procs: int) -> Path:
    # Same watchers; own tcp endpoints; the empty multicast_endpoint turns off circus's UDP
    # multicast auto-discovery socket (it would join a multicast group on every interface).
    # No stdout_stream: children inherit circusd's stdout, which is /dev/null.
    endpoint, pubsub = free_tcp_ports(2)
    text = (
        "[circus]\n"
        f"endpoint = tcp://127.0.0.1:{endpoint}\n"
        f"pubsub_endpoint = tcp://127.0.0.1:{pubsub}\n"
        "multicast_endpoint =\n"
        "statsd = false\n"
        f"check_delay = {CHECK_DELAY}\n"
        + circus_watchers_ini(watchers, procs)
    )
    path = workdir / "circus.ini"
    path.write_text(text)
    return path


def supervisord_config(workdir: Path, watchers: int, procs: int) -> Path:
    # A control socket, as circus and ringmaster have one; no log files anywhere.
    text = (
        "[supervisord]\n"
        "nodaemon = true\n"
        "logfile = /dev/null\n"
        "logfile_maxbytes = 0\n"
        f"pidfile = {workdir}/supervisord.pid\n"
        f"childlogdir = {workdir}\n"
        "\n[unix_http_server]\n"
        f"file = {workdir}/supervisor.sock\n"
        "\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
    )
    for i in range(watchers):
        text += (
            f"\n[program:w{i}]\n"
            f"command = {SLEEP_BIN} {SLEEP_ARGS}\n"
            f"numprocs = {procs}\n"
            "process_name = %(program_name)s_%(process_num)02d\n"
            "autorestart = true\n"
            "startsecs = 0\n"
            "stdout_logfile = NONE\n"
            "stderr_logfile = NONE\n"
        )
    path = workdir / "supervisord.conf"
    path.write_text(text)
    return path


def ringmaster_argv(config: Path) -> list[str]:
    return [str(RINGMASTER_BIN), str(config)]


def circus_argv(config: Path) -> list[str]:
    return [str(VENV / "bin" / "circusd"), str(config)]


def supervisord_argv(config: Path) -> list[str]:
    return [str(VENV / "bin" / "supervisord"), "-n", "-c", str(config)]


@dataclass(frozen=True)
class Tool:
    name: str
    write_config: Callable[[Path, int, int], Path]
    argv: Callable[[Path], list[str]]


TOOL_SPECS = {
    "ringmaster": Tool("ringmaster", ringmaster_config, ringmaster_argv),
    "circus": Tool("circus", circus_config, circus_argv),
    "supervisord": Tool("supervisord", supervisord_config, supervisord_argv),
}


# --------------------------------------------------------------------------------------------
# Running a supervisor


@dataclass
class Running:
    proc: subprocess.Popen
    argv: list[str]
    started: float  # perf_counter() just before the launch
    leaked: int = 0  # filled in when it is stopped

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"supervisor exited with status {code}: {shlex.join(self.argv)} "
                             "(run it by hand to see its output)")


@contextlib.contextmanager
def supervised(tool: Tool, workdir: Path, layout: tuple[int, int],
               stops: list[dict]) -> Iterator[Running]:
    """Start the tool on a fresh config; on exit stop it and clean up, appending to `stops`."""
    sub = workdir / f"{tool.name}-{layout[0]}x{layout[1]}"
    sub.mkdir()
    config = tool.write_config(sub, *layout)
    argv = tool.argv(config)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=sub)
    running = Running(proc, argv, started)
    try:
        yield running
    finally:
        stops.append(stop_supervisor(running))


def stop_supervisor(running: Running) -> dict:
    """SIGTERM, wait; then SIGKILL; then kill every leftover descendant. Returns what happened."""
    pid = running.pid
    table = scan_proc()
    known = {p: table[p].start_ticks for p in descendants(table, pid)}
    t0 = time.perf_counter()
    forced = False
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            forced = True
            running.proc.kill()
            running.proc.wait()
    stop_seconds = time.perf_counter() - t0
    running.leaked = kill_leftovers(known)
    return {"stop_seconds": round(stop_seconds, 3), "sigkill": forced,
            "exit_status": running.proc.returncode, "leaked": running.leaked}


def kill_leftovers(known: dict[int, int]) -> int:
    """Kill the supervisor's former descendants still alive, and any orphan `sleep` reparented
    to us (we are a subreaper). Returns how many there were."""
    me = os.getpid()
    deadline = time.monotonic() + 5.0
    leaked: set[int] = set()
    while True:
        table = scan_proc()
        alive = [p for p, start in known.items()
                 if p in table and table[p].start_ticks == start and table[p].state != "Z"]
        alive += [p for p, st in table.items()
                  if st.ppid == me and st.comm == "sleep" and st.state != "Z"]
        if not alive:
            break
        leaked.update(alive)
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        reap_orphans()
        if time.monotonic() > deadline:
            raise BenchError(f"processes survive SIGKILL: {sorted(alive)}")
        time.sleep(0.05)
    reap_orphans()
    return len(leaked)


def reap_orphans() -> None:
    """Collect zombies reparented to us (only called when no other child of ours runs)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# --------------------------------------------------------------------------------------------
# Metrics


def wait_for_sleeps(running: Running, count: int, timeout: float) -> float:
    """Seconds from the launch until `count` live `sleep` descendants exist (full /proc scan each ms)."""
    while True:
        if len(sleep_descendants(running.pid)) >= count:
            return time.perf_counter() - running.started
        running.check_alive()
        if time.perf_counter() - running.started > timeout:
            have = len(sleep_descendants(running.pid))
            raise BenchError(f"only {have}/{count} sleep processes after {timeout:.0f} s")
        time.sleep(STARTUP_SCAN_INTERVAL)


def measure_startup(tool: Tool, workdir: Path, stops: list[dict]) -> float:
    """Metric a: launch with the 20 x 10 config, seconds until 200 sleeps exist."""
    count = STARTUP_LAYOUT[0] * STARTUP_LAYOUT[1]
    with supervised(tool, workdir, STARTUP_LAYOUT, stops) as running:
        return wait_for_sleeps(running, count, STARTUP_TIMEOUT)


def measure_rss_mib(running: Running) -> float:
    """Metric b: the supervisor process's own VmRSS (children and helpers excluded)."""
    return vm_rss_kib(running.pid) / 1024.0


def measure_idle_cpu(running: Running, seconds: float) -> dict:
    """Metric d: utime + stime of the supervisor process over `seconds` of idle."""
    before, before_ns = read_stat(running.pid), cpu_ns_of_threads(running.pid)
    t0 = time.perf_counter()
    time.sleep(seconds)
    after, after_ns = read_stat(running.pid), cpu_ns_of_threads(running.pid)
    elapsed = time.perf_counter() - t0
    running.check_alive()
    if before is None or after is None:
        raise BenchError("supervisor vanished during the idle measurement")
    cpu_seconds = (after.cpu_ticks - before.cpu_ticks) / CLK_TCK
    return {
        "window_seconds": round(elapsed, 3),
        "cpu_ms": round(cpu_seconds * 1000.0, 1),
        "percent_of_one_core": round(100.0 * cpu_seconds / elapsed, 4),
        "tick_ms": 1000.0 / CLK_TCK,
        # Same window from schedstat (ns resolution; threads that exit in it are missed).
        "schedstat_cpu_ms": round((after_ns - before_ns) / 1e6, 3),
    }


def wait_new_sleep_child(sup_pid: int, known: set[int], t_kill: float) -> float | None:
    """Seconds from t_kill until a `sleep` child of sup_pid not in `known` runs; None at the
    bound. Polls the supervisor's children lists every RESPAWN_POLL_INTERVAL; only pids not
    seen before (or forked but not yet exec'd) have their stat read."""
    seen = set(known)
    while True:
        children = children_of(sup_pid)
        seen.intersection_update(children)  # a reaped pid may come back as a new child
        for pid in children:
            if pid in seen:
                continue
            st = read_stat(pid)
            if st is None:
                continue
            if st.comm == "sleep" and st.state != "Z":
                return time.perf_counter() - t_kill
            if st.comm != "sleep":
                continue  # forked, not yet exec'd: look again on the next poll
            seen.add(pid)  # a new child that is already a zombie
        if time.perf_counter() - t_kill > RESPAWN_TIMEOUT:
            return None
        time.sleep(RESPAWN_POLL_INTERVAL)


def measure_respawn(running: Running, kills: int, rng: random.Random) -> dict:
    """Metric c: SIGKILL a random sleep child (up at least MIN_VICTIM_AGE) `kills` times; time
    until a new one appears."""
    samples_ms: list[float] = []
    timeouts = 0
    for _ in range(kills):
        running.check_alive()
        known = set(children_of(running.pid))
        victims = live_sleep_children(running.pid, MIN_VICTIM_AGE)
        if not victims:
            raise BenchError(f"no sleep child running for {MIN_VICTIM_AGE:g} s to kill")
        victim = rng.choice(sorted(victims))
        t_kill = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        latency = wait_new_sleep_child(running.pid, known, t_kill)
        if latency is None:
            timeouts += 1
        else:
            samples_ms.append(latency * 1000.0)
        time.sleep(KILL_SPACING)
    return {
        "kills": kills,
        "timeouts": timeouts,
        "p50_ms": percentile(samples_ms, 50, digits=2),
        "p99_ms": percentile(samples_ms, 99, digits=2),
        "max_ms": round(max(samples_ms), 2) if samples_ms else None,
        "samples_ms": [round(s, 2) for s in samples_ms],
    }


def bench_tool(tool: Tool, args: argparse.Namespace, rng: random.Random) -> dict:
    """Every metric for one tool; two supervisor runs (200-process startup, then 100 steady)."""
    result: dict = {"stops": []}
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{tool.name}-"))
    try:
        log(f"{tool.name}: startup with {STARTUP_LAYOUT[0]}x{STARTUP_LAYOUT[1]} processes")
        result["startup_seconds"] = round(measure_startup(tool, workdir, result["stops"]), 4)

        steady = STEADY_LAYOUT[0] * STEADY_LAYOUT[1]
        log(f"{tool.name}: {steady} processes, settle {SETTLE_SECONDS:.0f} s")
        with supervised(tool, workdir, STEADY_LAYOUT, result["stops"]) as running:
            result["pid"] = running.pid
            result["command"] = shlex.join(running.argv)
            wait_for_sleeps(running, steady, STARTUP_TIMEOUT)
            time.sleep(SETTLE_SECONDS)
            running.check_alive()
            result["rss_mib"] = round(measure_rss_mib(running), 2)
            log(f"{tool.name}: idle CPU over {args.idle_seconds} s")
            result["idle_cpu"] = measure_idle_cpu(running, args.idle_seconds)
            log(f"{tool.name}: {args.kills} kills")
            result["respawn"] = measure_respawn(running, args.kills, rng)
            result["sleep_children_at_end"] = len(live_sleep_children(running.pid))
    except BenchError as e:
        result["error"] = str(e)
        log(f"{tool.name}: ERROR {e} (configs kept in {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    result["leaked"] = sum(s["leaked"] for s in result["stops"])
    return result


# --------------------------------------------------------------------------------------------
# Report


def table_rows(results: dict, args: argparse.Namespace) -> list[tuple[str, Callable]]:
    """(label, value getter) per metric row."""
    n_start = STARTUP_LAYOUT[0] * STARTUP_LAYOUT[1]
    n_steady = STEADY_LAYOUT[0] * STEADY_LAYOUT[1]
    return [
        (f"startup: {n_start} processes up (s)", get("startup_seconds")),
        (f"supervisor RSS, {n_steady} processes, {SETTLE_SECONDS:.0f} s idle (MiB)",
         get("rss_mib")),
        (f"respawn after SIGKILL p50 (ms, {args.kills} kills)", get("respawn", "p50_ms")),
        (f"respawn after SIGKILL p99 (ms, {args.kills} kills)", get("respawn", "p99_ms")),
        (f"respawn timeouts (> {RESPAWN_TIMEOUT:.0f} s)", get("respawn", "timeouts")),
        (f"idle CPU over {args.idle_seconds:g} s (CPU ms)", get("idle_cpu", "cpu_ms")),
        ("idle CPU (% of one core)", get("idle_cpu", "percent_of_one_core")),
        (f"idle CPU over {args.idle_seconds:g} s, schedstat (CPU ms)",
         get("idle_cpu", "schedstat_cpu_ms")),
        ("processes leaked after stop", get("leaked")),
    ]


def markdown_report(meta: dict, results: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Date: {meta['date']}. Kernel: {meta['kernel']}. CPU: {meta['cpu']} "
        f"({meta['cpus']} CPUs).",
        f"Command: `{meta['command']}`",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        "| metric | ringmaster | circus | supervisord | ringmaster/circus |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, getter in table_rows(results, args):
        values = [getter(results[t]) if t in results else None for t in TOOLS]
        ring, circ = values[0], values[1]
        ratio = None
        if isinstance(ring, (int, float)) and isinstance(circ, (int, float)) and circ:
            ratio = ring / circ
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {fmt(ratio)} |")
    for tool in TOOLS:
        if tool in results and "error" in results[tool]:
            lines.append(f"\n{tool}: ERROR {results[tool]['error']}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default=",".join(TOOLS),
                   help="comma-separated subset of: " + ", ".join(TOOLS))
    p.add_argument("--idle-seconds", type=float, default=60.0,
                   help="idle window for the CPU measurement (default 60)")
    p.add_argument("--kills", type=int, default=50,
                   help="SIGKILLs for the respawn latency (default 50)")
    p.add_argument("--no-build", action="store_true",
                   help="do not run `cargo build --release -p ringmaster` first")
    args = p.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown or not args.tools:
        p.error(f"--tools: unknown {unknown}; choose from {', '.join(TOOLS)}")
    if args.kills < 1 or args.idle_seconds <= 0:
        p.error("--kills and --idle-seconds must be positive")
    return args


def prepare(args: argparse.Namespace) -> dict[str, str]:
    """Build/install what the selected tools need; BenchError if one cannot be had."""
    versions: dict[str, str] = {}
    if "ringmaster" in args.tools:
        versions.update(ensure_ringmaster(build=not args.no_build))
    if "circus" in args.tools or "supervisord" in args.tools:
        versions.update(ensure_venv(VENV_REQUIREMENTS))
    return versions


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if sys.platform != "linux":
        print("this benchmark reads /proc: Linux only", file=sys.stderr)
        return 2
    try:
        versions = prepare(args)
    except (BenchError, subprocess.CalledProcessError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    become_subreaper()
    meta = {
        **run_meta(),
        "python": platform.python_version(),
        "versions": versions,
        "sleep": SLEEP_BIN,
        "settings": {
            "startup_layout": list(STARTUP_LAYOUT), "steady_layout": list(STEADY_LAYOUT),
            "check_delay": CHECK_DELAY, "settle_seconds": SETTLE_SECONDS,
            "idle_seconds": args.idle_seconds, "kills": args.kills,
            "kill_spacing_seconds": KILL_SPACING, "respawn_timeout_seconds": RESPAWN_TIMEOUT,
            "min_victim_age_seconds": MIN_VICTIM_AGE,
            "random_seed": RANDOM_SEED, "clk_tck": CLK_TCK,
        },
    }
    rng = random.Random(RANDOM_SEED)
    results = {tool: bench_tool(TOOL_SPECS[tool], args, rng) for tool in args.tools}

    report = markdown_report(meta, results, args)
    print(report)
    JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_text(json.dumps({**meta, "results": results, "markdown": report}, indent=2)
                        + "\n")
    log(f"wrote {JSON_OUT}")
    failed = [t for t, r in results.items() if "error" in r or r.get("leaked")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
