#!/usr/bin/env python3
"""A Python directory observer for tests/bench/pipeline.py: watchdog (inotify) + redis-py.

It does what Metwork's Python directory_observer does per event: one `LPUSH <queue> <json>`
round trip per file event, with the same message shape:

    {"directory": DIR, "filename": NAME, "event": "created", "event_timestamp": <float>}

Events: a file closed after writing (IN_CLOSE_WRITE → FileClosedEvent, `on_closed`) and a file
renamed inside the directory (IN_MOVED_FROM + IN_MOVED_TO → FileMovedEvent, `on_moved`, posted
under its new name). Names matching `--ignore` (default: Metwork's `.t`, `.tmp` and `.working`)
are skipped. The watch is non-recursive. The observer is scheduled with
`event_filter=[FileClosedEvent, FileMovedEvent]`, so the kernel watch mask is only
IN_CLOSE_WRITE | IN_MOVE | IN_DELETE_SELF (watchdog's default mask also has IN_OPEN, IN_CREATE,
IN_MODIFY, ... and would fill the kernel queue three to four times faster).

Needs the `watchdog` and `redis` distributions (tests/bench/pipeline.py installs pinned versions
into target/bench-venv). SIGTERM or SIGINT: stop the observer and exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time

import redis
from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.inotify import InotifyObserver

DEFAULT_IGNORE = r"^.*\.t$;^.*\.tmp$;^.*\.working$"


class Poster(FileSystemEventHandler):
    """Posts one LPUSH per closed-after-write or moved-in file of the watched directory."""

    def __init__(self, client: redis.Redis, directory: str, queue: str, ignore: list[re.Pattern]):
        self.client = client
        self.directory = directory
        self.queue = queue
        self.ignore = ignore

    def on_closed(self, event: FileClosedEvent) -> None:
        self.post(event.src_path)

    def on_moved(self, event: FileMovedEvent) -> None:
        self.post(event.dest_path)

    def post(self, path: str) -> None:
        directory, name = os.path.split(path)
        if directory != self.directory or any(p.match(name) for p in self.ignore):
            return
        message = {
            "directory": self.directory,
            "filename": name,
            "event": "created",
            "event_timestamp": time.time(),
        }
        self.client.lpush(self.queue, json.dumps(message))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", required=True, help="Redis unix socket path")
    p.add_argument("--directory", required=True, help="the watched directory (absolute)")
    p.add_argument("--queue", required=True, help="the Redis list to LPUSH to")
    p.add_argument("--ignore", default=DEFAULT_IGNORE, help="';'-separated regexes (re.match)")
    args = p.parse_args(argv)

    directory = os.path.abspath(args.directory).rstrip("/")
    ignore = [re.compile(r) for r in args.ignore.split(";") if r]
    client = redis.Redis(unix_socket_path=args.socket)
    client.ping()

    observer = Observer()
    if not isinstance(observer, InotifyObserver):
        print(f"py_observer: watchdog picked {type(observer).__name__}, not inotify", file=sys.stderr)
        return 2
    observer.schedule(Poster(client, directory, args.queue, ignore), directory, recursive=False,
                      event_filter=[FileClosedEvent, FileMovedEvent])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    observer.start()
    while not stop.wait(1.0):
        if not observer.is_alive():
            print("py_observer: the observer thread died", file=sys.stderr)
            return 1
    observer.stop()
    observer.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
