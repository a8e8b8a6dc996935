"""The messages between an app process and its helper (``isolation="process"``).

Each message is a ``marshal``-ed tuple of str / bytes / int / float (no JSON, no pickle:
marshal writes these types in a few µs and reads no code), framed by its length
(:func:`frame`, :class:`FrameReader`). Its first item says what it is (the kinds below).
"""

from __future__ import annotations

import marshal
import socket
import struct
from typing import Any, NamedTuple

from ._outcomes import OUTCOMES, Outcome
from ._request import Request

__all__ = ["Exchange", "FrameReader", "frame"]

_LEN = struct.Struct("<I")
#: App -> helper: the configuration (first message), an exchange, outcome counts for the
#: metric, a flush request, the close request.
CONFIG, EXCHANGE, COUNTS, FLUSH, CLOSE = "config", "x", "n", "flush", "close"
#: Helper -> app: outcomes of finished exchanges, a flush done, close done, a startup failure.
OUTCOMES_MSG, FLUSHED, CLOSED, FAILED = "o", "flushed", "closed", "failed"
#: An outcome travels as ``target index * OUTCOME_SLOTS + outcome index``.
OUTCOME_SLOTS = 8
_DROPPED = OUTCOMES.index(Outcome.DROPPED)
_SKIPPED = OUTCOMES.index(Outcome.SKIPPED)
#: A send to a helper that is gone fails with EPIPE instead of raising SIGPIPE (an embedding
#: server may not ignore it as CPython does).
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


def frame(message: Any) -> bytes:
    """``message`` (a tuple of marshal-able values) with its length in front."""
    payload = marshal.dumps(message)
    return _LEN.pack(len(payload)) + payload


class FrameReader:
    """Splits a byte stream back into messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > size:
                break
            out.append(marshal.loads(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out


class Exchange(NamedTuple):
    """One exchange, app -> helper (kind ``EXCHANGE``): the request, its copies, and how its
    targets were chosen. :meth:`encode` and :meth:`decode` are the one definition of its
    layout on the wire, for both sides.

    Parameters:
        seq: its sequence number (the helper reports its outcomes under it).
        engine: the engine it belongs to (the helper keeps a pipeline per engine).
        request: the request, its headers already filtered (credentials stay in the app).
        targets: the chosen targets' indexes in the configuration.
        rates: with ``deferred``, each chosen target's live sample rate (else empty).
        deferred: sampling by a body value, decided in the helper.
        body: the request body; None: not copied (``reason`` says why).
        reason: why production has no (complete) answer, or why the body is missing.
        status, encoding, resp: production's answer (status None: none).
        primary_ms: production's duration.
        traceparent, tracestate: the request's trace context (``""``: none).
    """

    seq: int
    engine: int
    request: Request
    targets: tuple[int, ...]
    rates: tuple[float, ...]
    deferred: bool
    body: bytes | None
    reason: str | None
    status: int | None
    encoding: str
    resp: bytes
    primary_ms: float
    traceparent: str
    tracestate: str

    def encode(self) -> bytes:
        """The framed message (marshal writes plain tuples, not a NamedTuple or a Request)."""
        return frame((EXCHANGE, *self[:2], self.request.fields(), *self[3:]))

    @classmethod
    def decode(cls, message: Any) -> Exchange:
        """The exchange a message of kind ``EXCHANGE`` carries."""
        return cls(message[1], message[2], Request(*message[3]), *message[4:])
