"""A candidate that misbehaves on purpose, on a raw socket so it can break HTTP itself."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from typing import Any

MODES = (
    "ok",  # valid JSON prediction, keep-alive
    "slow",  # answers after `delay` seconds
    "blackhole",  # accepts, reads, never answers
    "invalid_http",  # garbage instead of a status line
    "truncated",  # Content-Length promises more than is sent, then closes
    "invalid_json",  # 200 with a body that is not JSON
    "huge",  # 200 with a 50 MB body
    "gzip_bomb",  # 200, gzip: ~50 KB that inflates to ~50 MB
    "trickle",  # one byte every 50 ms
    "error500",  # 500
    "reset",  # closes the connection without answering
)

_BOMB = gzip.compress(b'{"churn_probability": ' + b"0" * 50_000_000 + b"}", compresslevel=9)


class FaultyCandidate:
    """Threaded raw HTTP/1.1 server on 127.0.0.1. ``mode`` may be changed while it runs."""

    def __init__(self, mode: str = "ok", delay: float = 3.0) -> None:
        assert mode in MODES
        self.mode = mode
        self.delay = delay
        self.received = 0
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(512)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict_shadow"

    def __enter__(self) -> FaultyCandidate:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._sock.close()
        with self.lock:
            for conn in self._conns:
                try:
                    conn.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buf: bytes) -> tuple[dict[str, str], bytes, bytes] | None:
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return headers, rest[:length], rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                req = self._read_request(conn, buf)
                if req is None:
                    return
                headers, body, buf = req
                with self.lock:
                    self.received += 1
                    self.headers.append(headers)
                if not self._respond(conn, self.mode, body):
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _respond(self, conn: socket.socket, mode: str, body: bytes) -> bool:
        """Answer one request; False closes the connection."""
        try:
            doc = json.loads(body)
            answer = {"customer_id": doc.get("customer_id"), "churn_probability": 0.3, "make_offer": False}
        except ValueError:
            answer = {"churn_probability": 0.3, "make_offer": False}
        payload = json.dumps(answer).encode()
        if mode == "slow":
            time.sleep(self.delay)
        if mode == "blackhole":
            self._stop.wait(120)
            return False
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False
        if mode == "invalid_http":
            conn.sendall(b"THIS IS NOT HTTP\r\n\x00\xff\r\n\r\n")
            return False
        if mode == "truncated":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            conn.sendall(payload[:10])
            return False
        if mode == "invalid_json":
            payload = b"{not json at all"
        if mode == "error500":
            conn.sendall(self._head(500, len(payload)) + payload)
            return True
        if mode == "huge":
            size = 50_000_000
            conn.sendall(self._head(200, size))
            block = b"x" * 1_000_000
            for _ in range(size // len(block)):
                conn.sendall(block)
            return True
        if mode == "gzip_bomb":
            conn.sendall(self._head(200, len(_BOMB), extra="Content-Encoding: gzip\r\n") + _BOMB)
            return True
        if mode == "trickle":
            conn.sendall(self._head(200, len(payload)))
            for byte in payload:
                if self._stop.wait(0.05):
                    return False
                conn.sendall(bytes([byte]))
            return True
        conn.sendall(self._head(200, len(payload)) + payload)
        return True

    @staticmethod
    def _head(status: int, length: int, extra: str = "") -> bytes:
        reason = {200: "OK", 500: "Internal Server Error"}[status]
        return (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
