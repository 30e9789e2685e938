#!/usr/bin/env python3
"""The cost of the generated nginx front, in one run: the same trivial app measured with wrk
behind the front and hit directly.

Two loads per round and target: wrk with --connections (the throughput and the p99 under load),
and wrk with one connection (the latency a single request pays, p50 and p99, nothing queued).

The app is the `app-rust` template (`ironwork plugins create hello --template app-rust`: a
hyper service, built here in release). Behind the front it runs as the plugin's app under
`ironwork start` (the generated nginx.conf, one nginx worker per core, the app's default two
workers on unix sockets). Directly it is the same binary on a TCP port, one process (its tokio
runtime uses every core). Rounds alternate front / direct; medians of requests/s and of the p99
latency wrk reports are compared.

Usage: python3 tests/bench/apps.py [--rounds 3] [--seconds 10] [--connections 32]
       [--threads 2] [--no-build]
Needs nginx and wrk (Debian packages) and redis-server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import benchlib
from benchlib import BenchError, log


def ensure_binaries(build: bool) -> Path:
    """The release directory, with ironwork, ringmaster, conf_monitor and the other daemons."""
    ironwork = benchlib.release_binaries(build, ["--workspace", "--bins"],
                                         ["ironwork", "ringmaster", "conf_monitor"])[0]
    return ironwork.parent


def ironwork(bins: Path, home: Path, *args: str) -> str:
    out = subprocess.run([str(bins / "ironwork"), "--home", str(home), *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"ironwork {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def prepare_home(bins: Path, workdir: Path, port: int) -> tuple[Path, Path]:
    """A home with one app plugin `hello` (the app-rust template, built); returns the home and
    the app's binary."""
    home = workdir / "home"
    subprocess.run([str(bins / "ironwork"), "init", str(home)], check=True, capture_output=True)
    ini = home / "config" / "ironwork.ini"
    text = ini.read_text()
    text = text.replace("\ndir =\n", f"\ndir = {bins}\n")
    text = text.replace("listen = 127.0.0.1:18868", f"listen = 127.0.0.1:{port}")
    for daemon in ("directory_observer", "conf_monitor", "gc"):
        text = text.replace(f"\n{daemon} = true\n", f"\n{daemon} = false\n")
    ini.write_text(text)
    ironwork(bins, home, "plugins", "create", "hello", "--template", "app-rust")
    plugin = home / "plugins" / "hello"
    log("building the app-rust template (release)")
    env = dict(os.environ)
    # Its own target directory keeps the plugin self-contained, as an operator would build it.
    env.pop("CARGO_TARGET_DIR", None)
    subprocess.run(["cargo", "build", "--release", "--offline", "--quiet"], cwd=plugin, env=env, check=True)
    return home, plugin / "target" / "release" / "hello"


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.time() > deadline:
                raise BenchError(f"{url} does not answer")
            time.sleep(0.1)


def tool_version(argv: list[str], pattern: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True)
    m = re.search(pattern, out.stdout + out.stderr, re.M)
    return m.group(1) if m else "unknown"


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def quantile(q: str) -> float:
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": quantile("50"), "p99_ms": quantile("99"),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single-seconds", type=int, default=5, help="length of the one-connection load")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "redis-server"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise BenchError(f"{tool} is not installed (apt-get install -y {tool})")
    bins = ensure_binaries(not args.no_build)
    front_port, direct_port = benchlib.free_tcp_ports(2)
    with tempfile.TemporaryDirectory(prefix="ironwork-apps-bench-") as tmp:
        workdir = Path(tmp)
        home, app = prepare_home(bins, workdir, front_port)
        front_url = f"http://127.0.0.1:{front_port}/hello/main/"
        direct_url = f"http://127.0.0.1:{direct_port}/hello/main/"
        log("starting the stack")
        ironwork(bins, home, "start", "--timeout", "60")
        direct = None
        try:
            wait_http(front_url)
            direct = subprocess.Popen([str(app), f"tcp://127.0.0.1:{direct_port}"])
            wait_http(direct_url)
            results = {"front": [], "direct": []}
            single = {"front": [], "direct": []}
            for r in range(args.rounds):
                for name, url in (("front", front_url), ("direct", direct_url)):
                    res = wrk(url, args.seconds, args.connections, args.threads)
                    log(f"round {r + 1} {name}: {res['rps']:.0f} req/s, p99 {res['p99_ms']:.2f} ms, "
                        f"non-2xx {res['non_2xx']}, socket errors {res['socket_errors']}")
                    results[name].append(res)
                    one = wrk(url, args.single_seconds, 1, 1)
                    log(f"round {r + 1} {name}, one connection: p50 {one['p50_ms'] * 1000:.0f} us, "
                        f"p99 {one['p99_ms'] * 1000:.0f} us")
                    single[name].append(one)
        finally:
            if direct:
                direct.terminate()
                direct.wait()
            subprocess.run([str(bins / "ironwork"), "--home", str(home), "stop"], capture_output=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99_ms")}
           for name, rs in results.items()}
    med_single = {name: {k: statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms")}
                  for name, rs in single.items()}
    report = {
        **benchlib.run_meta(),
        "revision": benchlib.ironwork_revision(),
        "nginx": tool_version(["nginx", "-v"], r"nginx/(\S+)"),
        "wrk": tool_version(["wrk", "--version"], r"^wrk (\S+)"),
        "rounds": args.rounds, "seconds": args.seconds,
        "connections": args.connections, "threads": args.threads,
        "median": med,
        "median_one_connection": med_single,
        "front_rps_ratio": med["front"]["rps"] / med["direct"]["rps"],
        "p99_added_ms": med["front"]["p99_ms"] - med["direct"]["p99_ms"],
        "one_connection_p50_added_us": (med_single["front"]["p50_ms"] - med_single["direct"]["p50_ms"]) * 1000,
        "non_2xx": sum(r["non_2xx"] for rs in (*results.values(), *single.values()) for r in rs),
        "rounds_detail": results,
        "one_connection_detail": single,
    }
    print(json.dumps(report, indent=2))
    print()
    print(f"| | requests/s, {args.connections} connections | p99 ms | one connection: p50 µs | p99 µs |")
    print("|---|---|---|---|---|")
    for name in ("front", "direct"):
        print(f"| {name} | {med[name]['rps']:.0f} | {med[name]['p99_ms']:.2f} | "
              f"{med_single[name]['p50_ms'] * 1000:.0f} | {med_single[name]['p99_ms'] * 1000:.0f} |")
    print(f"\nfront / direct: {report['front_rps_ratio']:.0%} of the requests/s; p99 under load "
          f"{report['p99_added_ms']:+.2f} ms; one connection p50 {report['one_connection_p50_added_us']:+.0f} µs; "
          f"non-2xx answers: {report['non_2xx']}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as e:
        log(f"error: {e}")
        raise SystemExit(2)
