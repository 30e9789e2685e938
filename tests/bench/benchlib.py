"""Helpers shared by the benchmark scripts in tests/bench (supervisors.py, pipeline.py,
logship.py, collector.py, reflector.py, apps.py).

It holds what the scripts do the same way: the repository, cargo target and shared virtualenv
paths, the error type, the release build of the binaries a script runs, progress logging, the virtualenv with pinned PyPI requirements (each
script passes its own pins), free loopback ports, a process's CPU time from /proc, percentiles,
tool versions, a private redis-server on a unix socket, and the header of a report (date, kernel, CPU, exact command line) with the
formatting of its table cells.

The scripts run as `python3 tests/bench/<script>.py`, so this directory is on sys.path and they
import it as `benchlib`. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "target" / "bench-venv"  # shared by every benchmark, each with its own pins
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cargo_target_dir() -> Path:
    """$CARGO_TARGET_DIR (relative to the repository if relative), else target/."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target if target.is_absolute() else REPO / target


class BenchError(Exception):
    """A tool could not be prepared or measured; the message says why."""


def release_binaries(build: bool, cargo_args: list[str], binaries: list[str]) -> list[Path]:
    """`cargo build --release <cargo_args>` unless `build` is false, then the paths of
    `binaries` (relative to target/release, e.g. `examples/spawn_rate`), each checked to exist."""
    target = cargo_target_dir() / "release"
    if build:
        argv = ["cargo", "build", "--release", *cargo_args]
        log(shlex.join(argv))
        subprocess.run(argv, cwd=REPO, check=True)
    paths = [target / b for b in binaries]
    for p in paths:
        if not p.exists():
            raise BenchError(f"{p} missing (run without --no-build)")
    return paths


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The virtualenv


def ensure_venv(requirements: tuple[str, ...]) -> dict[str, str]:
    """Create target/bench-venv and install the pinned requirements (`name==version` each;
    no-op when present). Returns the installed version of each, by distribution name."""
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"creating virtualenv {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pinned = pinned_versions(requirements)
    if installed_versions(python, list(pinned)) != pinned:
        log("installing " + " ".join(requirements))
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *requirements], check=True)
    versions = installed_versions(python, list(pinned))
    if versions != pinned:
        raise BenchError(f"venv has {versions}, wanted {pinned}")
    return versions


def pinned_versions(requirements: tuple[str, ...]) -> dict[str, str]:
    return dict(req.split("==") for req in requirements)


def installed_versions(python: Path, names: list[str]) -> dict[str, str]:
    """The version of each named distribution installed for `python` (missing ones left out)."""
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for name in {names!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


# --------------------------------------------------------------------------------------------
# Measuring


def free_tcp_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_of(pid: int) -> tuple[int, int]:
    """(utime + stime in ticks, schedstat ns summed over live threads); (0, 0) if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0, 0
    fields = data[data.rindex(b")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    ns = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
    return ticks, ns


def fs_type(path: str) -> str:
    """The file system type of the mount holding path (longest matching mount point)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    with contextlib.suppress(OSError):
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    return kind


def percentile(samples: list[float], pct: int, digits: int) -> float | None:
    """The pct-th percentile (inclusive method) rounded to `digits` decimals; None if empty."""
    if not samples:
        return None
    if len(samples) == 1:
        return round(samples[0], digits)
    return round(statistics.quantiles(samples, n=100, method="inclusive")[pct - 1], digits)


# --------------------------------------------------------------------------------------------
# Report


def command_version(argv: list[str]) -> str:
    """The first version-looking word a command prints (e.g. `redis-server --version`)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout.strip() or out.stderr.strip() or "unknown").splitlines()[0]
    for word in text.split():
        if word[:1].isdigit() or word.startswith("v="):
            return word.removeprefix("v=")
    return text


def ironwork_revision() -> str | None:
    """The checked-out commit (12 hex digits), with -dirty if tracked files changed."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True).stdout
        return rev + ("-dirty" if dirty.strip() else "")
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def exact_command_line() -> str:
    with open("/proc/self/cmdline", "rb") as f:
        parts = f.read().rstrip(b"\0").split(b"\0")
    return shlex.join(p.decode(errors="replace") for p in parts)


def run_meta() -> dict:
    """The first keys of a report's metadata: date, kernel, CPU model and count, command line."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "command": exact_command_line(),
    }


def get(*path):
    """A getter for the value at `path` in nested dicts (None where a key is missing)."""
    def getter(r):
        for key in path:
            if not isinstance(r, dict) or key not in r:
                return None
            r = r[key]
        return r
    return getter


def fmt(value) -> str:
    """A table cell: – for None, yes/no for a bool, 4 significant digits below 1000."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


# --------------------------------------------------------------------------------------------
# A private redis-server


class Redis:
    def __init__(self, workdir: Path, wrap: tuple[str, ...] = ()):
        """`wrap`: a command prefix for redis-server (e.g. `taskset -c 0`)."""
        if not shutil.which("redis-server"):
            raise BenchError("redis-server missing: apt-get install -y redis-server")
        self.sock = workdir / "redis.sock"
        self.conn: socket.socket | None = None
        self.proc = subprocess.Popen(
            [*wrap, "redis-server", "--port", "0", "--unixsocket", str(self.sock), "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while self.cli("PING") != "PONG":
            if time.time() > deadline:
                raise BenchError("redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args: str, stdin: bytes | None = None) -> str:
        out = subprocess.run(["redis-cli", "-s", str(self.sock), *args], input=stdin,
                             capture_output=True)
        return out.stdout.decode().strip()

    def llen(self, key: str) -> int:
        """LLEN over one kept connection: polling through redis-cli would fork and exec a
        process per poll, taking CPU from what is measured."""
        if self.conn is None:
            self.conn = socket.socket(socket.AF_UNIX)
            self.conn.connect(str(self.sock))
        k = key.encode()
        self.conn.sendall(b"*2\r\n$4\r\nLLEN\r\n$%d\r\n%s\r\n" % (len(k), k))
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += self.conn.recv(64)
        return int(reply[1:].strip())

    def pipe(self, commands: list[list[str]]) -> None:
        """Send commands through `redis-cli --pipe` (RESP), in one go."""
        buf = bytearray()
        for cmd in commands:
            buf += f"*{len(cmd)}\r\n".encode()
            for arg in cmd:
                b = arg.encode()
                buf += f"${len(b)}\r\n".encode() + b + b"\r\n"
        subprocess.run(["redis-cli", "-s", str(self.sock), "--pipe"], input=bytes(buf),
                       capture_output=True, check=True)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
