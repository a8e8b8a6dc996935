"""One raw-socket HTTP server for the client tests: it answers exactly as a test scripts it.

Used by test_http_client (scripted answers), test_wire (adversarial answers) and test_tls
(mutual TLS). Each accepted connection runs ``handler(server, conn)`` on its own thread; the
handler reads requests with :meth:`RawServer.read_request` and writes whatever bytes it likes.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

from shadow_middleware._wire import ShadowURL

Handler = Callable[["RawServer", socket.socket], None]


class RawServer:
    """A server on 127.0.0.1 (any free port) whose connections each run ``handler``.

    Parameters:
        handler: called with the server and one accepted connection, on its own thread; an
            ``OSError`` it raises (the client went away) ends that connection quietly.
        tls: a server context: every connection is wrapped first (a failed handshake counts
            in ``refused``, a good one in ``handshakes``); None: plain TCP.
    """

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0  # accepted
        self.handshakes = 0
        self.refused = 0
        self.requests: list[bytes] = []  # every whole request read, in order
        self.closed_by_peer = threading.Event()  # read_request saw an EOF
        self.sent: int | None = None  # for handlers that record how much they managed to write
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._buffers: dict[socket.socket, bytes] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            conn.settimeout(5)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:  # ssl.SSLError is one
                self.refused += 1
                conn.close()
                return
            self.handshakes += 1
        with conn:
            try:
                self.handler(self, conn)
            except OSError:
                pass

    def read_request(self, conn: socket.socket) -> bytes | None:
        """One whole request (head and Content-Length body); None at EOF."""
        buf = self._buffers.get(conn, b"")
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                self.closed_by_peer.set()
                return None
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)
        self._buffers[conn] = rest[length:]
        request = head + b"\r\n\r\n" + rest[:length]
        self.requests.append(request)
        return request

    def url(self, path: str = "/p") -> ShadowURL:
        """Where a client reaches this server (plain http) for ``path``."""
        return ShadowURL("http", "127.0.0.1", self.port, f"127.0.0.1:{self.port}", path)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def serving(made: list[RawServer]) -> Callable[[Handler], RawServer]:
    """A fixture's factory: each server it makes is appended to ``made`` (the fixture closes them)."""

    def make(handler: Handler) -> RawServer:
        made.append(RawServer(handler))
        return made[-1]

    return make
