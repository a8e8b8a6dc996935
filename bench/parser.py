"""CPU per parsed response of each parser option: ``python -m bench.parser``.

Options, each turning the bytes of one response into (status, content-encoding, body):

* ``httptools`` -- llhttp through httptools, with the callbacks ``_http.py`` needs;
* ``client``    -- what the shadow client actually runs per response: ``_Connection``
  (a fresh llhttp parser, our extra checks, the future) fed through ``data_received``;
* ``h11``       -- h11's client state machine (it needs the request sent first);
* ``hand``      -- the hand parser ``_http.py`` had before issue 12 (``bench/_hand_parser.py``),
  a lower bound for a fixed hand parser, since the fixes only add checks.

Inputs: typical candidate answers (small JSON with Content-Length, chunked, gzip).
Reports the best of several timing rounds, in microseconds per response.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import timeit
from collections.abc import Callable

import h11
import httptools

from bench._hand_parser import HandParser
from shadow_middleware._http import _Connection

ANSWER = json.dumps(
    {"customer_id": "C02000", "churn_probability": 0.31, "make_offer": False, "model_version": "v2"}
).encode()
BIG = json.dumps({"scores": [{"id": i, "p": i / 1000} for i in range(400)]}).encode()
GZ = gzip.compress(BIG)

HEAD = b"HTTP/1.1 200 OK\r\ndate: Wed, 25 Nov 2026 19:16:28 GMT\r\nserver: uvicorn\r\ncontent-type: application/json\r\n"
RESPONSES = {
    "json, Content-Length (95 B)": HEAD + b"content-length: %d\r\n\r\n" % len(ANSWER) + ANSWER,
    "json, chunked (3 chunks)": HEAD
    + b"transfer-encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (ANSWER[:30], ANSWER[30:60], ANSWER[60:]))
    + b"0\r\n\r\n",
    f"gzip, Content-Length ({len(GZ)} B of {len(BIG)})": HEAD
    + b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(GZ)
    + GZ,
}


class _Callbacks:
    __slots__ = ("body", "done", "encoding")

    def __init__(self) -> None:
        self.body = bytearray()
        self.encoding = ""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-encoding":
            self.encoding = value.decode("latin-1")

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.done = True


def with_httptools(data: bytes) -> tuple[int, str, bytes]:
    cb = _Callbacks()
    parser = httptools.HttpResponseParser(cb)
    parser.feed_data(data)
    assert cb.done
    return parser.get_status_code(), cb.encoding, bytes(cb.body)


class _Transport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def client_parser() -> Callable[[bytes], tuple[int, str, bytes]]:
    loop = asyncio.new_event_loop()
    conn = _Connection(loop)
    conn.connection_made(_Transport())

    def parse(data: bytes) -> tuple[int, str, bytes]:
        waiter = conn.start(b"", 1 << 20, False)
        conn.data_received(data)
        r = waiter.result()
        return r.status, r.content_encoding, r.body

    return parse


_REQUEST = h11.Request(method="POST", target="/predict", headers=[("Host", "x"), ("Content-Length", "0")])


def with_h11(data: bytes) -> tuple[int, str, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(_REQUEST)
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status, encoding, body = 0, "", b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
            for name, value in event.headers:
                if name == b"content-encoding":
                    encoding = value.decode("latin-1")
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, encoding, body
        else:
            raise AssertionError(event)


def with_hand(data: bytes) -> tuple[int, str, bytes]:
    parser = HandParser()
    parser.feed(data)
    r = parser.result
    assert r is not None
    return r.status, r.content_encoding, r.body


def measure(parse: Callable[[bytes], object], data: bytes, number: int, repeat: int) -> float:
    """Best of ``repeat`` rounds, microseconds per call."""
    return min(timeit.repeat(lambda: parse(data), number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20000, help="parses per timing round")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    options: dict[str, Callable[[bytes], tuple[int, str, bytes]]] = {
        "httptools": with_httptools,
        "client": client_parser(),
        "h11": with_h11,
        "hand": with_hand,
    }
    for data in RESPONSES.values():  # every option reads every input the same way
        results = {name: parse(data) for name, parse in options.items()}
        assert len(set(results.values())) == 1, results
    print(f"{'response':<36}" + "".join(f"{name:>12}" for name in options) + "   (us per response)")
    for label, data in RESPONSES.items():
        cells = []
        for name, parse in options.items():
            n = args.n // 10 if name == "h11" else args.n
            cells.append(f"{measure(parse, data, n, args.repeat):12.2f}")
        print(f"{label:<36}" + "".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
