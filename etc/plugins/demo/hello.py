#!/usr/bin/env python3
# The demo app's worker: an HTTP server on the unix socket it is given, answering which worker
# served the request and the request id nginx gave it.
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "-"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        answer = {"worker": os.getpid(), "path": self.path, "request_id": self.headers.get("X-Request-Id")}
        body = (json.dumps(answer) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


try:
    os.unlink(sys.argv[1])
except FileNotFoundError:
    pass
Server(sys.argv[1], Handler).serve_forever()
