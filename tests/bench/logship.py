#!/usr/bin/env python3
"""Side-by-side benchmark of JSON log shipping to Elasticsearch `_bulk`: ironwork's jsonlog2es
against rsyslog (imfile + omelasticsearch), with the limits of the machine next to them.

One run, one machine, one input file of --lines mflog JSON lines (default 1,000,000):

  1. build the release binaries (es_sink, jsonlog2es and its examples) unless --no-build;
  2. generate the lines into a temporary file (timestamps over two UTC days);
  3. limits: `cat FILE > /dev/null`, and `parse_loop FILE` (jsonlog2es's example: a plain serde
     parse loop over the file);
  4. rsyslog: a private rsyslogd (imfile only, its own work directory) shipping each line as the
     document with omelasticsearch in bulk mode; seconds from its start until the sink's
     `_count` reaches --lines;
  5. jsonlog2es: `jsonlog2es --config CONF --home TMP --log-format json` reading the same file
     from the beginning; seconds until `_count` reaches --lines;
  6. a table: docs, wall seconds, docs/s, MiB/s of input, CPU seconds (utime + stime), MiB of
     input per CPU-second, the sink's own CPU, and jsonlog2es/rsyslog.

Each shipper gets a fresh `es_sink --listen 127.0.0.1:0` process (ironwork's Elasticsearch-
compatible bulk sink, which keeps ids and counts only). Every `_count` must end exactly at
--lines; a mismatch is reported loudly and makes the exit status 1.

Results: a markdown table on stdout and target/bench-logship.json. rsyslog and
rsyslog-elasticsearch come from apt (installed if missing). Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchlib import (CLK_TCK, REPO, BenchError, cargo_target_dir, command_version, cpu_of, fmt,
                      fs_type, ironwork_revision, log, run_meta)

JSON_OUT = REPO / "target" / "bench-logship.json"
RELEASE = cargo_target_dir() / "release"
SINK_BIN = RELEASE / "es_sink"
SHIPPER_BIN = RELEASE / "jsonlog2es"
PARSE_LOOP_BIN = RELEASE / "examples" / "parse_loop"
RSYSLOGD = "/usr/sbin/rsyslogd"
APT_PACKAGES = ("rsyslog", "rsyslog-elasticsearch")
OMELASTICSEARCH = "omelasticsearch.so"

TOOLS = ("rsyslog", "jsonlog2es")
INDEX_PATTERN = "mflog-*"
RSYSLOG_INDEX = "mflog-bench"
DEFAULT_WORKDIR = "/dev/shm"  # tmpfs: the input file is read from memory by every tool alike
COUNT_POLL = 0.02  # seconds between two _count requests while a shipper runs
STALL_SECONDS = 30.0  # give up when _count has not moved for this long
SETTLE_SECONDS = 1.0  # after reaching the count, wait this long and count again (duplicates)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0

# rsyslog, tuned for throughput (see the README): batches as large as jsonlog2es's bulks, and
# two action workers, as many concurrent bulk requests as jsonlog2es's `workers`.
RSYSLOG_BATCH = 5000
RSYSLOG_QUEUE_SIZE = 200000
RSYSLOG_MAXBYTES = "5m"
RSYSLOG_ACTION_WORKERS = 2

# jsonlog2es's settings, as in the specification of its configuration.
JSONLOG2ES_BULK_DOCS = 5000
JSONLOG2ES_BULK_BYTES = "5MiB"
JSONLOG2ES_WORKERS = 2


BUILD_ARGV = ["cargo", "build", "--release", "-p", "es_sink", "-p", "jsonlog2es",
              # --bins too: with only --examples, cargo would build the examples, not the daemons.
              "--bins", "--examples"]


# --------------------------------------------------------------------------------------------
# Input


LEVELS = ("debug", "info", "info", "info", "info", "warning", "error")
EVENTS = ("file routed", "file received", "step done", "plugin reloaded", "file deleted")
PLUGINS = ("demo", "archive", "convert", "ftpsend")


def generate(path: Path, lines: int, seed: int = 42) -> int:
    """Write `lines` mflog JSON lines, timestamps increasing over two UTC days; returns bytes."""
    rng = random.Random(seed)
    start = datetime.datetime(2026, 11, 23, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
    span_us = 2 * 86400 * 1_000_000
    size = 0
    with open(path, "w", encoding="ascii", buffering=1 << 20) as f:
        for i in range(lines):
            micros = i * span_us // lines + rng.randrange(1000)
            stamp = datetime.datetime.fromtimestamp(start + micros // 1_000_000,
                                                    datetime.timezone.utc)
            line = json.dumps({
                "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros % 1_000_000:06d}Z",
                "level": rng.choice(LEVELS),
                "name": "step",
                "pid": 4000 + rng.randrange(500),
                "event": rng.choice(EVENTS),
                "plugin": rng.choice(PLUGINS),
                "file": f"/var/in/{rng.choice('abcxyz')}/file-{i:07d}.txt",
                "bytes": rng.randrange(1, 10_000_000),
            }, separators=(",", ":")) + "\n"
            size += len(line)
            f.write(line)
    return size


# --------------------------------------------------------------------------------------------
# Processes


def children_cpu() -> float:
    """utime + stime of every waited-for child so far, in seconds."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of a running process: schedstat (ns, its live threads) when the kernel has it,
    else utime + stime (10 ms ticks: too coarse for runs of a fraction of a second)."""
    ticks, ns = cpu_of(pid)
    return ns / 1e9 if ns else ticks / CLK_TCK


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: SIGKILL")
            proc.kill()
            proc.wait()
    return proc.returncode


ONE_CORE = False  # --one-core: each shipper on CPU 0, the sink on CPU 1


def pinned(cpu: int) -> list[str]:
    """`taskset -c CPU` under --one-core (taskset execs the command: same pid)."""
    return ["taskset", "-c", str(cpu)] if ONE_CORE else []


class Sink:
    """A fresh `es_sink --listen 127.0.0.1:0` process."""

    def __init__(self, workdir: Path, threads: int):
        self.argv = pinned(1) + [str(SINK_BIN), "--listen", "127.0.0.1:0", "--threads",
                                 str(threads), "--log-format", "json"]
        self.log = open(workdir / "es_sink.log", "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log)
        line = self.proc.stdout.readline().decode(errors="replace")
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        if not match:
            self.stop()
            raise BenchError(f"{shlex.join(self.argv)} printed {line!r}, not `listening on ADDR`")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> dict | list:
        with urllib.request.urlopen(self.url + path, timeout=10) as reply:
            return json.loads(reply.read())

    def count(self, pattern: str = INDEX_PATTERN) -> int:
        return int(self.get(f"/{pattern}/_count")["count"])

    def stats(self) -> dict:
        return self.get("/_sink/stats")

    def indices(self) -> dict[str, int]:
        return {row["index"]: int(row["docs.count"])
                for row in self.get("/_cat/indices?format=json")}

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        status = stop(self.proc)
        self.proc.stdout.close()
        self.log.close()
        return status


def wait_count(sink: Sink, n: int, proc: subprocess.Popen, t0: float) -> tuple[float | None, int]:
    """Poll `_count` until it reaches n; returns (seconds from t0 or None, last count). Gives up
    when the count has not moved for STALL_SECONDS or the shipper exits."""
    last, last_change = -1, time.perf_counter()
    while True:
        t = time.perf_counter()
        count = sink.count()
        if count >= n:
            return t - t0, count
        if count != last:
            last, last_change = count, t
        elif t - last_change > STALL_SECONDS:
            return None, count
        if proc.poll() is not None:
            return None, sink.count()
        time.sleep(COUNT_POLL)


@dataclass
class Input:
    path: Path
    lines: int
    bytes: int

    @property
    def mib(self) -> float:
        return self.bytes / (1 << 20)


def rates(inp: Input, seconds: float | None, cpu: float | None) -> dict:
    out: dict = {}
    if seconds:
        out["docs_per_s"] = round(inp.lines / seconds, 1)
        out["mib_per_s"] = round(inp.mib / seconds, 2)
    if cpu:
        out["mib_per_cpu_s"] = round(inp.mib / cpu, 2)
    return out


# --------------------------------------------------------------------------------------------
# Limits


def measure_command(name: str, argv: list[str], inp: Input, check_stdout=None) -> dict:
    """Run argv to completion (stdout to /dev/null unless checked); wall and CPU time."""
    log(f"{name}: {shlex.join(argv)}")
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE if check_stdout else subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    seconds = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    result = {"command": shlex.join(argv), "docs": inp.lines, "seconds": round(seconds, 3),
              "cpu_seconds": round(cpu, 3), **rates(inp, seconds, cpu)}
    if done.returncode != 0:
        result["error"] = (f"exit status {done.returncode}: "
                           + done.stderr.decode(errors="replace").strip()[-500:])
    elif check_stdout:
        problem = check_stdout(done.stdout.decode(errors="replace"))
        if problem:
            result["error"] = problem
    return result


def parse_loop_check(n: int):
    def check(stdout: str) -> str | None:
        if f"lines {n}" not in stdout.split("\n"):
            return f"parse_loop printed {stdout.strip()[-200:]!r}, expected `lines {n}`"
        return None
    return check


# --------------------------------------------------------------------------------------------
# Shippers


def rsyslog_conf(workdir: Path, inp: Input, port: int) -> str:
    """imfile → ruleset es → omelasticsearch in bulk mode, each line shipped as it is."""
    return f"""# Private rsyslogd for the log shipping benchmark: no system sockets, no other input.
global(workDirectory="{workdir / 'spool'}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="omelasticsearch")

# The whole line is the document (imfile's msg is the line as read, without its newline).
template(name="raw" type="string" string="%msg%")

# Main queue: imfile submits here; large batches to the ruleset.
main_queue(queue.type="linkedlist" queue.size="{RSYSLOG_QUEUE_SIZE}"
           queue.dequeueBatchSize="{RSYSLOG_BATCH}")

input(type="imfile" File="{inp.path}" Tag="bench" ruleset="es"
      freshStartTail="off" maxSubmitAtOnce="{RSYSLOG_BATCH}")

ruleset(name="es") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" template="raw"
         searchIndex="{RSYSLOG_INDEX}" bulkmode="on" esVersion.major="8"
         maxbytes="{RSYSLOG_MAXBYTES}"
         queue.type="linkedlist" queue.size="{RSYSLOG_QUEUE_SIZE}"
         queue.dequeuebatchsize="{RSYSLOG_BATCH}"
         queue.workerThreads="{RSYSLOG_ACTION_WORKERS}"
         action.resumeRetryCount="-1")
}}
"""


def jsonlog2es_conf(inp: Input, port: int) -> str:
    return f"""[elasticsearch]
url = http://127.0.0.1:{port}
index = mflog-%Y.%m.%d
timestamp_field = timestamp
bulk_max_docs = {JSONLOG2ES_BULK_DOCS}
bulk_max_bytes = {JSONLOG2ES_BULK_BYTES}
flush_interval = 1s
workers = {JSONLOG2ES_WORKERS}

[input:bench]
paths = {inp.path}
read_from = beginning
"""


def ship(tool: str, inp: Input, base: Path, sink_threads: int) -> dict:
    """Start a fresh sink and `tool`, time until `_count` reaches the line count."""
    workdir = base / tool
    workdir.mkdir()
    result: dict = {"docs_expected": inp.lines}
    sink, proc, logf = None, None, None
    try:
        sink = Sink(workdir, sink_threads)
        result["sink"] = shlex.join(sink.argv)
        if tool == "rsyslog":
            (workdir / "spool").mkdir()
            conf = workdir / "rsyslog.conf"
            conf.write_text(rsyslog_conf(workdir, inp, sink.port))
            check = subprocess.run([RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True,
                                   text=True)
            if check.returncode != 0:
                raise BenchError(f"rsyslogd -N1 refused {conf}: {check.stderr.strip()[-800:]}")
            argv = [RSYSLOGD, "-n", "-f", str(conf), "-i", str(workdir / "rsyslogd.pid")]
        elif tool == "jsonlog2es":
            conf = workdir / "jsonlog2es.ini"
            conf.write_text(jsonlog2es_conf(inp, sink.port))
            home = workdir / "home"
            home.mkdir()
            argv = [str(SHIPPER_BIN), "--config", str(conf), "--home", str(home),
                    "--log-format", "json"]
        else:
            raise BenchError(f"unknown tool {tool}")
        argv = pinned(0) + argv
        result["command"] = shlex.join(argv)
        result["config"] = conf.read_text()
        logf = open(workdir / f"{tool}.log", "wb")
        log(f"{tool}: {shlex.join(argv)}")
        sink_cpu0 = sink.cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                cwd=workdir)
        seconds, count = wait_count(sink, inp.lines, proc, t0)
        cpu = proc_cpu_seconds(proc.pid)  # before it stops: its drain is not shipping time
        sink_cpu = sink.cpu_seconds() - sink_cpu0
        time.sleep(SETTLE_SECONDS)
        final = sink.count()
        stats = sink.stats()
        result.update({
            "docs": final, "complete": seconds is not None,
            "seconds": round(seconds, 3) if seconds else None,
            "cpu_seconds": round(cpu, 3), "sink_cpu_seconds": round(sink_cpu, 3),
            "count_when_done": count, "sink_stats": stats, "indices": sink.indices(),
            **rates(inp, seconds, cpu),
        })
        if proc.poll() is not None:
            result["error"] = f"{tool} exited with status {proc.returncode} (see {workdir})"
        elif seconds is None:
            result["error"] = (f"_count stalled at {count} of {inp.lines} for "
                               f"{STALL_SECONDS:.0f} s")
        elif final != inp.lines:
            result["error"] = f"_count is {final}, expected exactly {inp.lines}"
        elif stats.get("bad_documents"):
            result["error"] = f"{stats['bad_documents']} documents refused as not JSON objects"
    except (BenchError, OSError, urllib.error.URLError, ValueError) as e:
        result["error"] = str(e)
    finally:
        if proc is not None:
            result["exit_status"] = stop(proc)
        if logf is not None:
            logf.close()
        if sink is not None:
            result["sink_exit_status"] = sink.stop()
    if "error" in result:
        log(f"{tool}: ERROR {result['error']} (files in {workdir})")
    else:
        log(f"{tool}: {inp.lines} docs in {result['seconds']} s, {result['cpu_seconds']} CPU s")
    return result


# --------------------------------------------------------------------------------------------
# Report


ROWS = (("cat", "`cat FILE > /dev/null` (limit)"),
        ("parse_loop", "`parse_loop FILE`: serde parse loop (limit)"),
        ("rsyslog", "rsyslog imfile → omelasticsearch"),
        ("jsonlog2es", "jsonlog2es"))


def markdown_report(meta: dict, results: dict) -> str:
    inp = meta["input"]
    lines = [
        f"Date: {meta['date']}. Kernel: {meta['kernel']}. "
        f"CPU: {meta['cpu']} ({meta['cpus']} CPUs). "
        f"Input: {inp['lines']} lines, {inp['mib']:.1f} MiB in {inp['path_dir']} "
        f"({inp['fs']}).",
        f"Command: `{meta['command']}`"
        + "".join(f" ({k}={v})" for k, v in meta["environment"].items()),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        "| tool | docs | wall s | docs/s | MiB/s | CPU s | MiB per CPU-s | sink CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, title in ROWS:
        r = results.get(key)
        if r is None:
            continue
        docs = r.get("docs")
        if "error" in r:
            docs = f"**{docs if docs is not None else '–'} ≠ {inp['lines']}**" \
                if key in TOOLS else "–"
        lines.append(f"| {title} | {fmt(docs)} | {fmt(r.get('seconds'))} "
                     f"| {fmt(r.get('docs_per_s'))} | {fmt(r.get('mib_per_s'))} "
                     f"| {fmt(r.get('cpu_seconds'))} | {fmt(r.get('mib_per_cpu_s'))} "
                     f"| {fmt(r.get('sink_cpu_seconds'))} |")
    ratio = None
    a = results.get("jsonlog2es", {}).get("docs_per_s")
    b = results.get("rsyslog", {}).get("docs_per_s")
    if a and b:
        ratio = a / b
    lines += ["", f"jsonlog2es / rsyslog (docs/s): {fmt(ratio)}", ""]
    for key, r in results.items():
        if "error" in r:
            lines.append(f"{key}: ERROR {r['error']}")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Setup


def ensure_rsyslog() -> str:
    """rsyslogd with omelasticsearch (apt-get install when missing); returns its version."""
    module_dirs = [Path("/usr/lib/x86_64-linux-gnu/rsyslog"), Path("/usr/lib/rsyslog"),
                   Path("/usr/lib/aarch64-linux-gnu/rsyslog")]

    def present() -> bool:
        return os.access(RSYSLOGD, os.X_OK) and any((d / OMELASTICSEARCH).exists()
                                                     for d in module_dirs)
    if not present():
        if os.geteuid() != 0:
            raise BenchError("install the Debian packages " + " ".join(APT_PACKAGES))
        log("apt-get install " + " ".join(APT_PACKAGES))
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        *APT_PACKAGES], check=True, env=env)
        if not present():
            raise BenchError(f"{RSYSLOGD} or {OMELASTICSEARCH} still missing after apt-get")
    return command_version([RSYSLOGD, "-v"])


def ensure_binaries(build: bool):
    """Build (unless --no-build) and check the binaries."""
    if build:
        log(shlex.join(BUILD_ARGV))
        done = subprocess.run(BUILD_ARGV, cwd=REPO)
        if done.returncode != 0:
            raise BenchError(f"{shlex.join(BUILD_ARGV)} failed ({done.returncode})")
    for binary in (SINK_BIN, SHIPPER_BIN, PARSE_LOOP_BIN):
        if not os.access(binary, os.X_OK):
            raise BenchError(f"binary not found: {binary} (build it with "
                             f"`{shlex.join(BUILD_ARGV)}`, or drop --no-build)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000,
                   help="mflog JSON lines in the input file (default 1000000)")
    p.add_argument("--tools", default=",".join(TOOLS),
                   help="shippers to run, comma-separated subset of: " + ", ".join(TOOLS))
    p.add_argument("--no-limits", action="store_true",
                   help="skip the cat and parse_loop rows")
    p.add_argument("--no-build", action="store_true",
                   help="do not run `" + shlex.join(BUILD_ARGV) + "` first")
    p.add_argument("--sink-threads", type=int, default=1,
                   help="es_sink runtime threads (default 1)")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR if os.access(DEFAULT_WORKDIR, os.W_OK)
                   else None, help="where the input file and the tools' directories go "
                   "(default /dev/shm, a tmpfs)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--one-core", action="store_true",
                   help="pin each shipper to CPU 0 (taskset) and the sink to CPU 1: "
                   "throughput on one core")
    args = p.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if any(t not in TOOLS for t in args.tools):
        p.error(f"--tools: choose from {', '.join(TOOLS)}")
    if args.lines < 1 or args.sink_threads < 1:
        p.error("--lines and --sink-threads must be positive")
    return args


def main(argv: list[str]) -> int:
    global ONE_CORE
    args = parse_args(argv)
    ONE_CORE = args.one_core
    if sys.platform != "linux":
        print("this benchmark reads /proc: Linux only", file=sys.stderr)
        return 2
    try:
        ensure_binaries(not args.no_build)
        versions: dict[str, str] = {}
        revision = ironwork_revision()
        if revision:
            versions["ironwork"] = revision
        if "rsyslog" in args.tools:
            versions["rsyslog"] = ensure_rsyslog()
    except (BenchError, subprocess.CalledProcessError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tools = args.tools

    base = Path(tempfile.mkdtemp(prefix="bench-logship-", dir=args.workdir))
    path = base / "mflog.json.log"
    log(f"generating {args.lines} lines into {path}")
    inp = Input(path, args.lines, generate(path, args.lines))
    meta = {
        **run_meta(),
        "environment": {k: os.environ[k] for k in ("CARGO_TARGET_DIR", "CARGO_BUILD_JOBS")
                        if os.environ.get(k)},
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
        "input": {"lines": inp.lines, "bytes": inp.bytes, "mib": round(inp.mib, 2),
                  "path_dir": str(base.parent), "fs": fs_type(str(base))},
        "settings": {"sink_threads": args.sink_threads, "one_core": args.one_core,
                     "count_poll_seconds": COUNT_POLL,
                     "stall_seconds": STALL_SECONDS, "clk_tck": CLK_TCK,
                     "rsyslog_batch": RSYSLOG_BATCH, "rsyslog_queue_size": RSYSLOG_QUEUE_SIZE,
                     "rsyslog_maxbytes": RSYSLOG_MAXBYTES,
                     "rsyslog_action_workers": RSYSLOG_ACTION_WORKERS},
    }
    results: dict[str, dict] = {}
    if not args.no_limits:
        results["cat"] = measure_command("cat", ["cat", str(path)], inp)
        results["parse_loop"] = measure_command("parse_loop", [str(PARSE_LOOP_BIN), str(path)],
                                                inp, parse_loop_check(inp.lines))
    for tool in tools:
        results[tool] = ship(tool, inp, base, args.sink_threads)

    report = markdown_report(meta, results)
    print(report)
    JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_text(json.dumps({**meta, "results": results, "markdown": report}, indent=2)
                        + "\n")
    log(f"wrote {JSON_OUT}")
    failed = any("error" in r for r in results.values())
    if failed:
        for key, r in results.items():
            if "error" in r:
                print(f"!!! {key}: {r['error']}", file=sys.stderr)
    if not failed and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        log(f"files kept in {base}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
