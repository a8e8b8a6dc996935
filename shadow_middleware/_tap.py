"""The per-request tap: what an adapter feeds as bytes pass, and when to hand over.

An adapter opens a :class:`Tap` for a request on a shadowed route (``Shadow.begin``) and
calls it as the request body is read and the response is sent. The tap keeps capped
copies; when the app has read the whole body it hands one job per chosen target to the
engine, and the primary's answer when it is complete. Every method is safe: it never
raises and does nothing more once something went wrong inside it.

The tap talks to the engine only through :class:`Owner`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from typing import Any, Protocol

from ._compare import MAX_STRING_VALUE, MISSING, AttrValue, resolve, try_json
from ._config import ShadowConfig, Source
from ._dispatch import Job, Primary, TargetState
from ._outcomes import Outcome, Reason
from ._request import Request
from ._telemetry import capture_context
from ._wire import forwarded_headers, sample_point, shadow_url

__all__ = ["Owner", "RequestTap", "Tap", "header_value"]

_dumps = json.dumps  # bound at import, like _compare's json.loads
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Owner(Protocol):
    """The engine, as a tap sees it."""

    config: ShadowConfig

    def submit(self, job: Job) -> Reason | None:
        """Queue ``job``; the drop reason when a bound refused it."""

    def end_early(self, tap: Tap, state: TargetState, outcome: Outcome, reason: Reason) -> None:
        """Count and record an exchange that ends before any shadow call."""

    def deliver(self, jobs: list[Job], primary: Primary) -> None:
        """Hand the primary's answer to the jobs of one request."""

    def internal_error(self, exc: BaseException) -> None:
        """One of our own bugs: count and log it; never raise."""


class RequestTap(Protocol):
    """What an adapter calls as a request's bytes pass: a :class:`Tap` (``isolation="thread"``)
    or an ``_isolation.Capture`` (``isolation="process"``). No method ever raises."""

    @property
    def body_done(self) -> bool: ...

    def skip_all(self, reason: Reason) -> None: ...

    def feed(self, chunk: bytes | bytearray | memoryview) -> None: ...

    def body_complete(self) -> None: ...

    def disconnected(self) -> None: ...

    def response_start(self, status: int, content_encoding: str) -> None: ...

    def response_body(self, chunk: bytes | bytearray | memoryview) -> None: ...

    def response_complete(self) -> None: ...

    def finish(self, failure: Reason | None = None) -> None: ...


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of the (lower-case) header ``name``."""
    for key, value in headers:
        if key == name:
            return value
    return None


def _scalars(
    doc: Any, pointers: tuple[tuple[tuple[str, ...], str], ...]
) -> tuple[tuple[str, AttrValue], ...]:
    """``(suffix, value)`` for each pointer whose value in ``doc`` is a string (cut like a
    correlation id), a number or a boolean; objects, arrays, null and absent values are left out."""
    found: list[tuple[str, AttrValue]] = []
    for tokens, suffix in pointers:
        value = resolve(doc, tokens)
        if isinstance(value, str):
            found.append((suffix, value[:MAX_STRING_VALUE]))
        elif isinstance(value, bool | float) or (
            isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX  # else no OTLP encoding
        ):
            found.append((suffix, value))
    return tuple(found)


class CappedCopy:
    """The capped copies one request leaves as its bytes pass: the request body as the app
    reads it, the primary's answer as it is sent. Shared by :class:`Tap` (thread isolation) and
    ``_isolation.Capture`` (process isolation), which decide what to do with them.

    Parameters:
        request: the request, as ``Shadow.begin`` was given it.
        body_cap: ``max_body_bytes``: past it the copy is dropped and the request is skipped.
        response_cap: ``max_response_bytes`` of the primary's answer kept for comparison.
    """

    __slots__ = (
        "_body_cap",
        "_body_done",
        "_broken",
        "_chunks",
        "_finished",
        "_gone",
        "_over",
        "_resp_cap",
        "_resp_chunks",
        "_resp_done",
        "_resp_encoding",
        "_resp_size",
        "_resp_status",
        "_size",
        "ctx",
        "request",
        "start",
    )

    def __init__(self, request: Request, body_cap: int, response_cap: int) -> None:
        self.request = request
        self.ctx = capture_context()
        self.start = time.perf_counter()
        self._body_cap = body_cap
        self._resp_cap = response_cap
        self._chunks: list[bytes] = []
        self._size = 0
        self._over = False
        self._body_done = False
        self._resp_status: int | None = None
        self._resp_encoding = ""
        self._resp_chunks: list[bytes] = []
        self._resp_size = 0
        self._resp_done = False
        self._finished = False
        self._broken = False
        self._gone = False

    @property
    def body_done(self) -> bool:
        return self._body_done

    def _fail(self, exc: BaseException) -> None:
        """One of our own bugs: stop copying, count it (never raise)."""
        raise NotImplementedError

    def _wants_response(self) -> bool:
        """Whether anything will ever compare the primary's answer (else it is not copied)."""
        return True

    def skip_all(self, reason: Reason) -> None:
        """End the exchange for every chosen target as ``skipped``."""
        raise NotImplementedError

    def _body_copied(self, body: bytes) -> None:
        """The whole request body, within the cap: what the mode does with it."""
        raise NotImplementedError

    def _body_failed(self, exc: BaseException) -> None:
        """``_body_copied`` raised (one of our bugs)."""
        self._fail(exc)

    def body_complete(self) -> None:
        """The app has read the whole request body: hand the copy on (``_body_copied``), or
        skip every target when it was over ``max_body_bytes``."""
        if self._body_done or self._broken:
            return
        self._body_done = True
        try:
            if self._over:
                self.skip_all(Reason.BODY_TOO_LARGE)
                return
            body = b"".join(self._chunks)
            self._chunks = []
            self._body_copied(body)
        except Exception as exc:
            self._body_failed(exc)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """A piece of the request body, as the app reads it."""
        if self._over or self._body_done or self._broken:
            return
        try:
            self._size += len(chunk)
            if self._size > self._body_cap:
                self._over = True
                self._chunks = []
            elif chunk:
                self._chunks.append(bytes(chunk))
        except Exception as exc:
            self._fail(exc)

    def disconnected(self) -> None:
        """The client went away before sending the whole body."""
        self._gone = True

    def response_start(self, status: int, content_encoding: str) -> None:
        if self._broken:
            return
        self._resp_status = status
        self._resp_encoding = content_encoding

    def response_body(self, chunk: bytes | bytearray | memoryview) -> None:
        """A piece of the primary's response body, as it is sent."""
        if self._broken or self._resp_done or not self._wants_response():
            return
        try:
            room = self._resp_cap - self._resp_size
            if room > 0 and chunk:
                piece = bytes(chunk[:room])
                self._resp_chunks.append(piece)
                self._resp_size += len(piece)
        except Exception as exc:
            self._fail(exc)


class Tap(CappedCopy):
    """One request on a shadowed route, as an adapter sees it."""

    __slots__ = (
        "_deferred",
        "_jobs",
        "_primary",
        "_states",
        "correlation_id",
        "forward",
        "inputs",
        "owner",
    )

    def __init__(
        self,
        owner: Owner,
        request: Request,
        states: list[TargetState],
        deferred: bool,
    ) -> None:
        config = owner.config
        super().__init__(request, config.max_body_bytes, config.max_response_bytes)
        self.owner = owner
        self.correlation_id: str | None = None
        self.inputs: tuple[tuple[str, AttrValue], ...] = ()  # ShadowConfig.record_inputs found
        self.forward: list[tuple[str, str]] = []
        self._states = states
        self._deferred = deferred
        self._jobs: list[Job] = []
        self._primary: Primary | None = None

    def skip_all(self, reason: Reason) -> None:
        """End the exchange for every chosen target as ``skipped``."""
        states, self._states = self._states, []
        for state in states:
            self.owner.end_early(self, state, Outcome.SKIPPED, reason)

    def _fail(self, exc: BaseException) -> None:
        self._broken = True
        self.owner.internal_error(exc)

    def _wants_response(self) -> bool:
        return bool(self._jobs) or not (self._body_done or self._over or not self._states)

    # ---- request body ----------------------------------------------------------

    def _body_failed(self, exc: BaseException) -> None:
        self._fail(exc)
        self.skip_all(Reason.INTERNAL_ERROR)

    def _body_copied(self, body: bytes) -> None:
        """Start the shadow calls now."""
        owner = self.owner
        config = owner.config
        doc: Any = MISSING  # the request body as JSON: parsed once, when first needed

        def document() -> Any:
            nonlocal doc
            if doc is MISSING:
                ok, doc = try_json(body)
                if not ok:
                    doc = None
            return doc

        def value_of(source: Source) -> str | None:
            if source.kind == "header":
                return header_value(self.request.headers, source.name)
            found = resolve(document(), source.tokens) if document() is not None else MISSING
            if found is MISSING or found is None:
                return None
            if isinstance(found, dict | list):
                return _dumps(found, sort_keys=True)[:256]
            if isinstance(found, bool):
                return "true" if found else "false"
            return str(found)[:256]

        if config.correlation_source is not None:
            self.correlation_id = value_of(config.correlation_source)
        if config.input_tokens and document() is not None:
            self.inputs = _scalars(doc, config.input_tokens)
        states = self._states
        if self._deferred and config.sample_source is not None:
            key = value_of(config.sample_source)
            point = sample_point(key) if key is not None else None
            states = [
                s
                for s in states
                if s.rate >= 1.0 or (point if point is not None else random.random()) < s.rate
            ]
        self._states = []
        request = self.request
        self.forward = forwarded_headers(request.headers, config.header_filter)
        for state in states:
            job = Job(
                state, request.method, shadow_url(state.target, request.path, request.query), body, self
            )
            reason = owner.submit(job)
            if reason is not None:
                owner.end_early(self, state, Outcome.DROPPED, reason)
            else:
                self._jobs.append(job)
        if self._primary is not None and self._jobs:
            # The app answered before it finished reading the body: compare with that answer.
            self._deliver(self._primary)

    # ---- response --------------------------------------------------------------

    def response_complete(self) -> None:
        """The primary's response has been sent completely."""
        if self._resp_done or self._broken:
            return
        self._resp_done = True
        try:
            self._primary = Primary(
                self._resp_status,
                self._resp_encoding,
                b"".join(self._resp_chunks),
                (time.perf_counter() - self.start) * 1000.0,
                None,
            )
            self._resp_chunks = []
            if self._jobs:
                self._deliver(self._primary)
        except Exception as exc:
            self._fail(exc)

    def _deliver(self, primary: Primary) -> None:
        jobs, self._jobs = self._jobs, []
        if jobs:
            self.owner.deliver(jobs, primary)

    def finish(self, failure: Reason | None = None) -> None:
        """The request is over (always called, from a ``finally``).

        ``failure`` says why the primary has no complete answer, if it has none:
        ``primary_exception``, ``client_disconnect``.
        """
        if self._finished:
            return
        self._finished = True
        try:
            if self._broken:
                failure = Reason.INTERNAL_ERROR
            elif self._gone:  # the root cause, even if the app then raised over it
                failure = Reason.CLIENT_DISCONNECT
            if not self._body_done:
                self.skip_all(failure or Reason.BODY_NOT_READ)
            elif self._jobs and not self._resp_done:
                self._deliver(Primary(None, "", b"", None, failure or Reason.NO_RESPONSE))
            elif self._states:
                self.skip_all(failure or Reason.INTERNAL_ERROR)
        except Exception as exc:
            self.owner.internal_error(exc)
