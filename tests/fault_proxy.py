"""A fault-injecting HTTP proxy the tests run in front of a real docker-registry.

`FaultProxy(upstream)` listens on 127.0.0.1 and forwards every request to the registry
(the Host header is kept, so the registry's absolute upload `Location`s point back at the
proxy). Faults are armed with `add(Fault(...))` and match on method and a regex searched in
the request path (query included); each fires `times` times:

- `status`: answer `status` (with `headers`, e.g. Retry-After) without forwarding;
- `reset`: forward, send the headers and `after_bytes` of the body, then reset (RST);
- `stall`: forward, send the headers and `after_bytes` of the body, then send nothing more
  for `stall_seconds` (or until the proxy is closed);
- `corrupt`: forward, flip one byte of the body (same length);
- `reset-request`: read `after_bytes` of the request body (all of it by default), then
  reset without forwarding (a broken upload);
- `drop`: forward, then reset before any of the answer is sent (the registry did the
  work, the client never hears of it).

`log` records every request as `Hit(method, path, headers, outcome, time)`.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection",
                  "proxy-authorization", "te", "trailer", "upgrade", "content-length"})


@dataclass
class Fault:
    kind: str  # status | reset | stall | corrupt | reset-request
    path: str  # regex searched in the request path
    method: str = "*"
    times: int = 1
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int = 0
    stall_seconds: float = 30.0


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    outcome: str  # "200", "FAULT status 500", ...
    time: float


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.log: list[Hit] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, OSError):
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

            def do_any(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def hits(self, pattern: str, method: str = "*") -> list[Hit]:
        return [h for h in self.log if re.search(pattern, h.path)
                and method in ("*", h.method)]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # --- one request ---------------------------------------------------------------------

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method in ("*", method) and \
                        re.search(fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, req: http.server.BaseHTTPRequestHandler, outcome: str) -> None:
        with self._lock:
            self.log.append(Hit(req.command, req.path, {k.lower(): v for k, v in
                                                        req.headers.items()},
                                outcome, time.monotonic()))

    @staticmethod
    def _read_body(req: http.server.BaseHTTPRequestHandler, limit: int | None = None) -> bytes:
        if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    req.rfile.readline()
                    return bytes(out)
                out += req.rfile.read(size)
                req.rfile.readline()
                if limit is not None and len(out) >= limit:
                    return bytes(out)
        length = int(req.headers.get("Content-Length", "0") or 0)
        return req.rfile.read(length if limit is None else min(limit, length))

    @staticmethod
    def _reset(req: http.server.BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(OSError):
            req.wfile.flush()
        sock = req.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        req.close_connection = True

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        fault = self._take(req.command, req.path)
        if fault is not None and fault.kind == "reset-request":
            self._read_body(req, fault.after_bytes or None)
            self._record(req, "FAULT reset-request")
            self._reset(req)
            return
        body = self._read_body(req)
        if fault is not None and fault.kind == "status":
            self._record(req, f"FAULT status {fault.status}")
            payload = (b'{"errors":[{"code":"UNKNOWN","message":"injected by the test proxy"}]}'
                       if req.command != "HEAD" else b"")
            req.send_response(fault.status)
            for k, v in fault.headers.items():
                req.send_header(k, v)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(payload) if payload else 0))
            req.end_headers()
            req.wfile.write(payload)
            return
        status, headers, data, head_length = self._forward(req, body)
        if fault is not None and fault.kind == "drop":
            self._record(req, "FAULT drop")
            self._reset(req)
            return
        if fault is not None and fault.kind == "corrupt" and data:
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        outcome = str(status) if fault is None else f"FAULT {fault.kind}"
        self._record(req, outcome)
        req.send_response(status)
        for k, v in headers:
            req.send_header(k, v)
        req.send_header("Content-Length", head_length if req.command == "HEAD"
                        else str(len(data)))
        req.end_headers()
        if req.command == "HEAD":
            return
        if fault is not None and fault.kind in ("reset", "stall"):
            req.wfile.write(data[:fault.after_bytes])
            req.wfile.flush()
            # let the client read what was sent: a reset discards the peer's unread data
            self._closing.wait(fault.stall_seconds if fault.kind == "stall" else 0.3)
            self._reset(req)
            return
        req.wfile.write(data)

    def _forward(self, req: http.server.BaseHTTPRequestHandler, body: bytes
                 ) -> tuple[int, list[tuple[str, str]], bytes, str]:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(req.command, req.path, body=body if body or req.command in (
                "POST", "PUT", "PATCH") else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            return resp.status, out, data, resp.getheader("Content-Length", "0")
        finally:
            conn.close()


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
