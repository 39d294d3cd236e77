"""A real HTTP server on 127.0.0.1 for tests and benchmarks: serves a directory, injects faults by rule, and can
add latency to every request and cap its bandwidth (bench/remote.py).

A rule matches request paths by glob and applies a fault to every matching request, or only to the first
`first` requests of each matching file (as a busy object store answers 503 once, then serves):
    503, 429, 500, 404, 403, 401   answer with that status;
    reset                          send half the body, then reset the connection (TCP RST);
    cut                            send half the body, then close the connection (a body cut short);
    stall                          send half the body, then send nothing for `stall_s` (beyond the client's timeout);
    corrupt                        send the whole body with one byte changed (a checksum mismatch).
"""

from __future__ import annotations

import fnmatch
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STATUS_FAULTS = {"503": 503, "429": 429, "500": 500, "404": 404, "403": 403, "401": 401}
BODY_FAULTS = {"reset", "cut", "stall", "corrupt"}


@dataclass
class Rule:
    pattern: str  # glob over the request path, e.g. "*.bin" or "/ds/manifest.json"
    fault: str  # one of STATUS_FAULTS or BODY_FAULTS
    first: int = 0  # only the first this many requests of each matching file; 0: all of them

    def __post_init__(self):
        assert self.fault in STATUS_FAULTS or self.fault in BODY_FAULTS, self.fault


class FaultServer:
    """`with FaultServer(root, rules) as server:` serves `root` at `server.url` until the block ends."""

    def __init__(self, root: Path, rules: list[Rule] = (), latency_s: float = 0.0, bytes_per_s: float = 0.0,
                 stall_s: float = 30.0, port: int = 0):
        self.root, self.rules = Path(root), list(rules)
        self.latency_s, self.bytes_per_s, self.stall_s = latency_s, bytes_per_s, stall_s
        self.requests: list[tuple[str, str]] = []  # (path, fault or "ok") of every GET, in order
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()  # ends stalled responses
        self._server.shutdown()
        self._server.server_close()

    def gets(self, pattern: str = "*") -> list[str]:
        """Paths of the GETs so far whose path matches `pattern`."""
        with self._lock:
            return [p for p, _ in self.requests if fnmatch.fnmatch(p, pattern)]

    def faults(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(p, f) for p, f in self.requests if f != "ok"]

    def _fault_for(self, path: str) -> str:
        with self._lock:
            self._counts[path] += 1
            n = self._counts[path]
            fault = next((r.fault for r in self.rules
                          if fnmatch.fnmatch(path, r.pattern) and (r.first == 0 or n <= r.first)), "ok")
            self.requests.append((path, fault))
        return fault


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            fault = server._fault_for(path)
            if server.latency_s:
                time.sleep(server.latency_s)
            if fault in STATUS_FAULTS:
                return self._status(STATUS_FAULTS[fault])
            file = (server.root / path.lstrip("/")).resolve()
            if server.root.resolve() not in file.parents or not file.is_file():
                return self._status(404)
            body = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self._body(body, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (it timed out): as a real server would see it

        def _status(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _body(self, body: bytes, fault: str) -> None:
            if fault == "corrupt":
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            if fault in ("reset", "cut", "stall"):
                self._send(body[:len(body) // 2])
                self.wfile.flush()
                if fault == "reset":  # SO_LINGER with a zero timeout: close() sends RST, not FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif fault == "stall":
                    server._stopping.wait(server.stall_s)
                self.close_connection = True
                return
            self._send(body)

        def _send(self, data: bytes) -> None:
            """`data` at most `bytes_per_s` (in 64 KiB pieces), else at once."""
            if not server.bytes_per_s:
                self.wfile.write(data)
                return
            piece = 1 << 16
            started = time.monotonic()
            for i in range(0, len(data), piece):
                self.wfile.write(data[i:i + piece])
                ahead = (i + piece) / server.bytes_per_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    return Handler
