"""Helpers shared by the benchmark scripts in tests/bench (supervisors.py, pipeline.py).

It holds what both scripts do the same way: the repository and shared virtualenv paths, the
error type, progress logging, the virtualenv with pinned PyPI requirements (each script passes
its own pins), free loopback ports, percentiles, and the header of a report (date, kernel, CPU,
exact command line) with the formatting of its table cells.

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
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "target" / "bench-venv"  # shared by every benchmark, each with its own pins


class BenchError(Exception):
    """A tool could not be prepared or measured; the message says why."""


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


def percentile(samples: list[float], pct: int, digits: int) -> float | None:
    """The pct-th percentile (inclusive method) rounded to `digits` decimals; None if empty."""
    if not samples:
        return None
    if len(samples) == 1:
        return round(samples[0], digits)
    return round(statistics.quantiles(samples, n=100, method="inclusive")[pct - 1], digits)


# --------------------------------------------------------------------------------------------
# Report


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
