#!/usr/bin/env python3
"""The reflector end to end against a plain batched HTTP client, in one run.

The same points reach the same InfluxDB (Debian's influxdb 1.x, started here on free loopback
ports) two ways, in alternating rounds, each round into a fresh database:

- reflector: the `collector.data.queue` messages are pushed into Redis first; then a
  `reflector` (release build) with one `push_metrics` reflection is started, and the clock runs
  from its launch until its `reflector_points_sent_total` (its /metrics, polled every 20 ms)
  reaches the number of points, i.e. until InfluxDB answered 204 for the last batch. Its
  start-up, the reflection consumers, both queues' Redis round trips and the sender are inside.
- plain: `crates/reflector/examples/plain_writer.rs` reads the same messages, maps the same
  points beforehand (untimed), then encodes and POSTs them in batches of the same size, one
  after the other: InfluxDB's own ingest rate with no queue in between.

After every round InfluxDB is asked how many points it holds (they must all be there). The
ratio of the medians is the figure (goal: the reflector at >= 80% of the plain client).
Also reported: the reflection tree against a linear scan over 10,000 rules
(`cargo bench -p reflector --bench tree`), when --tree is given.

Usage: python3 tests/bench/reflector.py [--messages 40000] [--points 20] [--rounds 3]
       [--bulk 5000] [--no-build] [--tree]
Standard library, redis-server, redis-cli and influxd only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import benchlib
from benchlib import BenchError, Redis, log


def ensure_binaries(build: bool) -> list[Path]:
    return benchlib.release_binaries(
        build, ["-p", "reflector", "--bin", "reflector", "--example", "plain_writer"],
        ["reflector", "examples/plain_writer"])


class Influx:
    def __init__(self, workdir: Path):
        if not Path("/usr/bin/influxd").exists():
            raise BenchError("influxd missing: apt-get install -y influxdb")
        http, rpc = benchlib.free_tcp_ports(2)
        self.url = f"http://127.0.0.1:{http}"
        self.port = http
        d = workdir / "influx"
        conf = workdir / "influxdb.conf"
        conf.write_text(
            f'reporting-enabled = false\nbind-address = "127.0.0.1:{rpc}"\n'
            f'[meta]\n  dir = "{d}/meta"\n[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n'
            f'[http]\n  bind-address = "127.0.0.1:{http}"\n  log-enabled = false\n'
            f'[monitor]\n  store-enabled = false\n')
        self.proc = subprocess.Popen([*PIN_SERVER, "/usr/bin/influxd", "-config", str(conf)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(workdir / "influxd.log", "ab"))
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/ping", timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    raise BenchError(f"influxd did not start; see {workdir / 'influxd.log'}")
                time.sleep(0.1)

    def query(self, q: str, db: str = "") -> dict:
        params = urllib.parse.urlencode({"q": q, "db": db})
        req = urllib.request.Request(f"{self.url}/query?{params}", method="POST")
        return json.loads(urllib.request.urlopen(req, timeout=60).read())

    def count(self, db: str) -> int:
        r = self.query('SELECT COUNT("value") FROM "cpu"', db)
        try:
            return int(r["results"][0]["series"][0]["values"][0][1])
        except (KeyError, IndexError):
            return 0

    def version(self) -> str:
        out = subprocess.run(["/usr/bin/influxd", "version"], capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


TARGETS = 1000
# Where the metric server and its clients run: by default InfluxDB alone on CPU 1 and Redis, the
# reflector or the plain client on CPU 0, so the server has the same core in both runs (as it
# would on its own host); --shared-cores lets every process use both.
PIN_SERVER: list[str] = []
PIN_CLIENT: list[str] = []


def messages(n_messages: int, n_points: int) -> list[str]:
    """n_messages collected data of n_points each, from 1,000 targets in turn: 8 series per
    target (8,000 in all, whatever the sizes), every point at its own time."""
    out = []
    base = 1_700_000_000
    for m in range(n_messages):
        first = base + (m // TARGETS) * n_points
        points = [{"name": "cpu", "timestamp": first + i + 0.5, "tags": {"core": str(i % 8)},
                   "value": float(i)} for i in range(n_points)]
        out.append(json.dumps({"plugin": "bench", "collection": "load",
                               "target": f"host{m % TARGETS}", "collected_at": base,
                               "points": points}))
    return out


def sent_total(url: str) -> int:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("reflector_points_sent_total"):
            return int(float(line.split()[-1]))
    return 0


def reflector_round(binary: Path, workdir: Path, redis: Redis, influx: Influx, db: str,
                    msgs: list[str], total: int, bulk: int) -> float:
    port = benchlib.free_tcp_ports(1)[0]
    config = workdir / "reflector.ini"
    config.write_text(
        f"[reflector]\nredis = unix://{redis.sock}\nlisten = 127.0.0.1:{port}\n"
        f"metrics_server_endpoints = 127.0.0.1:{influx.port}\ninfluxdb_database = {db}\n"
        f"metrics_send_bulk_size = {bulk}\n\n"
        f"[reflection:bench.all]\nplugin = bench\nactions = push_metrics\n")
    # The data is at rest in Redis before the clock starts, as the plain client's is in memory.
    redis.pipe([["LPUSH", "collector.data.queue", m] for m in msgs])
    if redis.llen("collector.data.queue") != len(msgs):
        raise BenchError("collector.data.queue does not hold every message")
    start = time.perf_counter()
    proc = subprocess.Popen([*PIN_CLIENT, str(binary), "--config", str(config), "--log-format", "json"],
                            stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "reflector.log", "ab"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                if sent_total(url) >= total:
                    break
            except OSError:
                if proc.poll() is not None:
                    raise BenchError(f"reflector exited; see {workdir / 'reflector.log'}")
            if time.time() > deadline:
                raise BenchError("the reflector did not deliver every point in 10 min")
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def plain_round(plain: Path, influx: Influx, db: str, path: Path, total: int, bulk: int) -> float:
    out = subprocess.run([*PIN_CLIENT, str(plain), str(path), "127.0.0.1", str(influx.port), db,
                          str(bulk)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if r["points"] != total:
        raise BenchError(f"plain_writer wrote {r['points']} points, expected {total}")
    return r["seconds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=40000)
    p.add_argument("--points", type=int, default=20, help="points per message")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bulk", type=int, default=5000, help="points per InfluxDB write")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--shared-cores", action="store_true",
                   help="no pinning: InfluxDB, Redis and the client share both cores")
    p.add_argument("--tree", action="store_true", help="also run the tree vs scan criterion-less bench")
    args = p.parse_args()
    reflector, plain = ensure_binaries(not args.no_build)
    if not args.shared_cores:
        PIN_SERVER[:] = ["taskset", "-c", "1"]
        PIN_CLIENT[:] = ["taskset", "-c", "0"]
    total = args.messages * args.points
    meta = benchlib.run_meta()
    meta["ironwork"] = benchlib.ironwork_revision()
    meta["redis"] = benchlib.command_version(["redis-server", "--version"])
    msgs = messages(args.messages, args.points)
    results: dict[str, list[float]] = {"reflector": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="ironwork-bench-reflector-") as tmp:
        workdir = Path(tmp)
        data_file = workdir / "messages.jsonl"
        data_file.write_text("\n".join(msgs) + "\n")
        redis, influx = Redis(workdir, tuple(PIN_CLIENT)), Influx(workdir)
        try:
            for r in range(args.rounds):
                for kind in ("plain", "reflector") if r % 2 == 0 else ("reflector", "plain"):
                    db = f"{kind}_{r}"
                    influx.query(f"CREATE DATABASE {db}")
                    if kind == "plain":
                        secs = plain_round(plain, influx, db, data_file, total, args.bulk)
                    else:
                        secs = reflector_round(reflector, workdir, redis, influx, db, msgs, total,
                                               args.bulk)
                    held = influx.count(db)
                    if held != total:
                        raise BenchError(f"{db}: InfluxDB holds {held} points, expected {total}")
                    results[kind].append(total / secs)
                    log(f"round {r + 1} {kind}: {total / secs:,.0f} points/s ({secs:.2f} s)")
                    influx.query(f"DROP DATABASE {db}")
            meta["influxdb"] = influx.version()
        finally:
            influx.stop()
            redis.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    result = {"meta": meta, "points_per_round": total, "bulk": args.bulk, "rates": results,
               "medians": med, "ratio": med["reflector"] / med["plain"]}
    out = benchlib.REPO / "target" / "bench" / "reflector.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"# reflector bench, {meta['date']}, {meta['cpu']} x {meta['cpus']}, "
          f"kernel {meta['kernel']}, ironwork {meta['ironwork']}, redis {meta['redis']}, "
          f"{meta['influxdb']}")
    print(f"command: {meta['command']}\n")
    print("| | points/s (median) | rounds |")
    print("|---|---|---|")
    for k in ("plain", "reflector"):
        rounds = ", ".join(f"{x:,.0f}" for x in results[k])
        print(f"| {k} | {med[k]:,.0f} | {rounds} |")
    print(f"\nreflector / plain: **{result['ratio']:.0%}** "
          f"({total:,} points per round: {args.messages} messages x {args.points} points, "
          f"batches of {args.bulk})")
    if args.tree:
        log("cargo bench -p reflector --bench tree")
        subprocess.run(["cargo", "bench", "-p", "reflector", "--bench", "tree"],
                       cwd=benchlib.REPO, check=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"reflector bench: {e}", file=sys.stderr)
        sys.exit(1)
