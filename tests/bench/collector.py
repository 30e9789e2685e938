#!/usr/bin/env python3
"""The collector against the machine's own limits, in one run.

1. Throughput: SCRIPT collections of /bin/true per second through Redis (jobs pushed on
   collector.job.queue, results counted on collector.data.queue) vs the raw fork+exec rate of
   /bin/true with the same concurrency (crates/collector/examples/spawn_rate.rs: threads that
   spawn and wait as fast as they can). Rounds alternate raw / collector; medians are reported.
2. Scheduler lateness at 10,000 jobs/min: 1,000 targets every 6 s, run by the manager for
   --lateness-seconds. The manager's own histogram (time from a job's slot to its push on the
   queue) gives the p50/p99 bucket bounds; the results give the end-to-end lateness (slot to
   end of the run) from their scheduled_at and collected_at.

Usage: python3 tests/bench/collector.py [--concurrency 64] [--jobs 20000] [--rounds 3]
       [--lateness-seconds 60] [--no-build]
Standard library, redis-server and redis-cli only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import benchlib
from benchlib import BenchError, Redis, log


def ensure_binaries(build: bool) -> list[Path]:
    return benchlib.release_binaries(
        build, ["-p", "collector", "--bin", "collector", "--example", "spawn_rate"],
        ["collector", "examples/spawn_rate"])


def start_collector(binary: Path, workdir: Path, redis: Redis, settings: str, collections: str):
    port = benchlib.free_tcp_ports(1)[0]
    config = workdir / "collector.ini"
    config.write_text(
        f"[collector]\nredis = unix://{redis.sock}\nlisten = 127.0.0.1:{port}\n"
        f"token_file = {workdir / 'token'}\n{settings}\n{collections}")
    log_file = open(workdir / "collector.log", "ab")
    proc = subprocess.Popen([str(binary), "--config", str(config), "--log-format", "json"],
                            stdout=subprocess.DEVNULL, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 10
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise BenchError(f"collector did not start; see {workdir / 'collector.log'}")
            time.sleep(0.05)
    return proc, url


def status(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url + "/me/status", timeout=5).read())


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def raw_rate(spawn: Path, concurrency: int, seconds: float) -> float:
    out = subprocess.run([str(spawn), str(concurrency), str(seconds)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)["rate"]


def collector_rate(binary: Path, workdir: Path, redis: Redis, concurrency: int,
                   jobs: int) -> float:
    redis.cli("FLUSHALL")
    # A trigger interval of an hour: the manager must not clear the queue we fill on purpose.
    settings = (f"concurrency = {concurrency}\ncollection_bulk_size = 100\nresult_batch = 500\n"
                "trigger_interval = 1h\n")
    collections = ("[collection:bench.true]\nplugin_dir = /\nmethod = SCRIPT\ninterval = 0\n"
                   "cmd_and_args = /bin/true\n")
    proc, _ = start_collector(binary, workdir, redis, settings, collections)
    try:
        now = time.time()
        commands = []
        for i in range(jobs):
            job = json.dumps({"plugin": "bench", "collection": "true", "target": f"t{i}",
                              "scheduled_at": now, "correlation_info": {}})
            commands.append(["LPUSH", "collector.job.queue", job])
        t0 = time.monotonic()
        redis.pipe(commands)
        while redis.llen("collector.data.queue") < jobs:
            if time.monotonic() - t0 > 600:
                raise BenchError("collector did not finish the jobs within 10 minutes")
            if proc.poll() is not None:
                raise BenchError(f"collector died; see {workdir / 'collector.log'}")
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        failed = [d for d in (json.loads(x) for x in
                              redis.cli("LRANGE", "collector.data.queue", "0", "9").splitlines())
                  if d.get("error")]
        if failed:
            raise BenchError(f"runs failed: {failed[0]['error']}")
        return jobs / elapsed
    finally:
        stop(proc)


def lateness(binary: Path, workdir: Path, redis: Redis, concurrency: int, seconds: float) -> dict:
    redis.cli("FLUSHALL")
    targets = " ".join(f"t{i}" for i in range(1000))
    collections = ("[collection:bench.sched]\nplugin_dir = /\nmethod = SCRIPT\ninterval = 6\n"
                   f"cmd_and_args = /bin/true\ntargets = {targets}\n")
    proc, url = start_collector(binary, workdir, redis, f"concurrency = {concurrency}\n",
                                collections)
    try:
        log(f"scheduling 10,000 jobs/min for {seconds:.0f} s")
        time.sleep(seconds)
        s = status(url)
    finally:
        stop(proc)
    raw = redis.cli("LRANGE", "collector.data.queue", "0", "-1").splitlines()
    data = [json.loads(x) for x in raw]
    e2e = [(d["collected_at"] - d["scheduled_at"]) * 1000 for d in data if "scheduled_at" in d]
    c = s["counters"]
    return {
        "jobs_enqueued": c["jobs_enqueued"],
        "jobs_per_min": c["jobs_enqueued"] / seconds * 60,
        "enqueue_p50_le_ms": c["schedule_lateness_ms"]["p50_le"],
        "enqueue_p99_le_ms": c["schedule_lateness_ms"]["p99_le"],
        "enqueue_buckets": c["schedule_lateness_ms"]["buckets"],
        "end_to_end_p50_ms": benchlib.percentile(e2e, 50, 1),
        "end_to_end_p99_ms": benchlib.percentile(e2e, 99, 1),
        "results": len(data),
        "jobs_discarded": c["jobs_discarded"],
        "runs_skipped": c["runs_skipped"],
        "runs_failed": c["runs_failed"],
        "slots_skipped": c["slots_skipped"],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=64,
                   help="runs at once, for both (default: the collector's default, 64)")
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lateness-seconds", type=float, default=60)
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args(argv)
    collector, spawn = ensure_binaries(not args.no_build)
    meta = benchlib.run_meta()
    meta["ironwork"] = benchlib.ironwork_revision()
    meta["redis"] = benchlib.command_version(["redis-server", "--version"])
    with tempfile.TemporaryDirectory(prefix="ironwork-bench-collector-") as tmp:
        workdir = Path(tmp)
        redis = Redis(workdir)
        try:
            raws, ours = [], []
            for r in range(args.rounds):
                # The raw loop runs about as long as the collector round took.
                seconds = max(3.0, args.jobs / (ours[-1] if ours else 2000.0))
                raws.append(raw_rate(spawn, args.concurrency, seconds))
                ours.append(collector_rate(collector, workdir, redis, args.concurrency, args.jobs))
                log(f"round {r + 1}: raw {raws[-1]:.0f}/s, collector {ours[-1]:.0f}/s")
            late = lateness(collector, workdir, redis, args.concurrency, args.lateness_seconds)
        finally:
            redis.stop()
    raw, ours_m = statistics.median(raws), statistics.median(ours)
    result = {
        "meta": meta,
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "raw_rates": raws,
        "collector_rates": ours,
        "raw_median": raw,
        "collector_median": ours_m,
        "ratio": ours_m / raw,
        "lateness": late,
    }
    out = benchlib.REPO / "target" / "bench" / "collector.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"# collector bench, {meta['date']}, {meta['cpu']} × {meta['cpus']}, "
          f"kernel {meta['kernel']}, ironwork {meta['ironwork']}, redis {meta['redis']}")
    print(f"command: {meta['command']}\n")
    print("| measure | value |\n|---|---|")
    print(f"| raw fork+exec of /bin/true, {args.concurrency} at once (median of {args.rounds}) | {raw:.0f}/s |")
    print(f"| collector SCRIPT /bin/true through Redis, concurrency {args.concurrency} | {ours_m:.0f}/s |")
    print(f"| collector / raw | {ours_m / raw:.0%} |")
    print(f"| jobs scheduled per minute | {late['jobs_per_min']:.0f} |")
    print(f"| enqueue lateness p50 / p99 (bucket bounds) | ≤ {late['enqueue_p50_le_ms']} ms / ≤ {late['enqueue_p99_le_ms']} ms |")
    print(f"| slot → end of run p50 / p99 | {late['end_to_end_p50_ms']} ms / {late['end_to_end_p99_ms']} ms |")
    print(f"| jobs discarded / runs skipped / failed | {late['jobs_discarded']} / {late['runs_skipped']} / {late['runs_failed']} |")
    print(f"\nraw JSON: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"collector bench: {e}", file=sys.stderr)
        sys.exit(1)
