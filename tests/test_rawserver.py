"""The one raw-socket test server (tests/rawserver.py) that test_http_client, test_wire and
test_tls share: it reads whole requests and counts what the client did."""

from __future__ import annotations

import socket

from .rawserver import RawServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answer_each(srv: RawServer, conn: socket.socket) -> None:
    while srv.read_request(conn) is not None:
        conn.sendall(OK)


def test_pipelined_requests_on_one_connection_are_read_whole_and_counted() -> None:
    srv = RawServer(answer_each)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            c.sendall(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n")
            got = b""
            while got.count(b"ok") < 2:
                got += c.recv(4096)
        assert srv.closed_by_peer.wait(5)
        assert srv.connections == 1 and srv.handshakes == srv.refused == 0
        assert srv.requests == [
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /b HTTP/1.1\r\n\r\n",
        ]
        assert srv.url("/x?q=1").target == "/x?q=1" and srv.url().port == srv.port
    finally:
        srv.close()
