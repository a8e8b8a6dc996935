"""``isolation="process"``, the app's side: copy each exchange, hand it to a helper process.

The app process keeps only what must happen where the request is: routing, sampling, the
capped copies of the request and of production's answer (:class:`Capture`, the tap of this
mode). When production's answer is complete it serializes ONE message per request and
writes it, without ever blocking, to a private socket shared with a helper process
(``_helper``) that runs the thread mode's whole machinery (the pipeline, dispatcher, HTTP
client, comparison, circuit breaker, spans and metrics) in its own interpreter, with its
own GIL.

* **Private**: a ``socketpair`` (AF_UNIX), made before the helper is spawned and handed to it
  alone (``pass_fds``); nothing else can connect. One helper per app process, shared by every
  engine in it (``_helperlink.HelperLink``; each engine's messages carry its id, the helper
  keeps a pipeline per engine): it serves only its parent and dies with it (EOF on the socket, and
  ``PR_SET_PDEATHSIG`` on Linux), or when the process's last engine is closed or collected.
* **Cheap**: a message is a ``marshal``-ed tuple of str / bytes / int / float (no JSON,
  no pickle: marshal writes these types in a few µs and reads no code), framed by its
  length; the write is one ``send`` on a non-blocking socket.
* **Bounded, never blocking**: the socket's send buffer is the queue (``SO_SNDBUF``). When
  it is full the exchange is ``dropped`` (``queue_full``), counted here. A message only
  partly written keeps its remainder here (one at most) until the socket drains.
* **Counted across the boundary**: every message carries a sequence number and stays "in
  flight" until the helper reports its outcomes (batched, every 50 ms); ``stats()`` adds
  them up. If the helper dies, what was in flight is counted ``dropped``
  (``helper_restart``) and a new helper is started on the next request, after a backoff
  (0.25 s doubling to 30 s) so that a crash-looping helper cannot burn the CPU.
* **Outcomes decided here** (``queue_full``, ``helper_restart``, ``shutdown``) have no span
  (the helper never saw them); their ``shadow.requests`` counts are sent to the helper once
  the socket takes them again, so the metric stays complete.

The helper is spawned (``subprocess``: fork + exec of ``sys.executable``), never forked
from the app: it inherits no thread, lock or open connection of the app. It is started
lazily, on the first shadowed request of each process, so ``gunicorn --preload`` masters
start none and every worker gets its own; the spawn happens on this client's own
long-lived thread (the one that reads the helper's reports), because Linux delivers
``PR_SET_PDEATHSIG`` when the *thread* that spawned a child ends.

Three modules: this one is the engines' side (:class:`Capture`, :class:`HelperClient`);
``_helperlink`` the helper's lifecycle (spawn, backoff, the socket, the reader thread, what a
lost helper had in flight); ``_helperwire`` the messages (kinds, framing, the exchange).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ._circuit import CircuitBreaker
from ._config import ShadowConfig, config_data
from ._dispatch import TargetState
from ._helperlink import HelperLink, log_error, process_link
from ._helperwire import _DROPPED, _SKIPPED, CLOSE, CONFIG, COUNTS, FLUSH, Exchange, frame
from ._outcomes import OUTCOMES, Reason
from ._request import Request
from ._tap import CappedCopy
from ._telemetry import trace_context
from ._wire import HeaderFilter

__all__ = ["Capture", "HelperClient"]


class Capture(CappedCopy):
    """One request on a shadowed route under ``isolation="process"``: capped copies of the
    request body and of production's answer, sent to the helper as one message.

    The same adapter interface and the same rules as :class:`~._tap.Tap` (what is copied,
    when a request is skipped and why); the helper replays the message into a real ``Tap``.
    """

    __slots__ = (
        "_body",
        "_client",
        "_primary_ms",
        "_sent",
        "claimed",
        "deadline",
        "deferred",
        "states",
    )

    def __init__(
        self,
        client: HelperClient,
        request: Request,
        states: list[TargetState],
        deferred: bool,
    ) -> None:
        super().__init__(request, client.max_body_bytes, client.max_response_bytes)
        self._client = client
        self.states = states
        self.deferred = deferred
        self._body: bytes | None = None
        self._primary_ms = 0.0
        self._sent = False
        self.claimed = False  # the message is sent or counted (under the link's lock)
        self.deadline = 0.0

    def skip_all(self, reason: Reason) -> None:
        """End the exchange for every chosen target as ``skipped`` (in the helper)."""
        if not self._sent:
            self._send(None, reason, None)

    def _fail(self, exc: BaseException) -> None:
        self._broken = True
        self._client.error(exc)

    def _wants_response(self) -> bool:
        return not (self._over or self._sent)

    def _body_copied(self, body: bytes) -> None:
        self._body = body
        if self._resp_done:
            # The app answered before it finished reading the body: compare with that answer.
            self._send(body, None, self._resp_status)
        else:
            self._client.watch(self)

    def response_complete(self) -> None:
        if self._resp_done or self._broken:
            return
        self._resp_done = True
        self._primary_ms = (time.perf_counter() - self.start) * 1000.0
        if self._body_done and not self._sent:
            self._send(self._body, None, self._resp_status)

    def finish(self, failure: Reason | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        if self._sent:
            return
        try:
            if self._broken:
                failure = Reason.INTERNAL_ERROR
            elif self._gone:  # the root cause, even if the app then raised over it
                failure = Reason.CLIENT_DISCONNECT
            if not self._body_done or self._body is None:
                self.skip_all(failure or Reason.BODY_NOT_READ)
            else:
                # No complete answer from production: the helper judges it (skipped, or the
                # candidate's own error), as the thread mode does.
                self._send(self._body, failure or Reason.NO_RESPONSE, None)
        except Exception as exc:
            self._client.error(exc)

    def _send(self, body: bytes | None, reason: str | None, status: int | None) -> None:
        self._sent = True
        resp = b"".join(self._resp_chunks) if status is not None else b""
        self._resp_chunks = []
        self._body = None
        self._client.send(self, body, reason, status, self._resp_encoding, resp, self._primary_ms)

    def overdue(self) -> None:
        """Production's answer never completed (a response never closed): sent without it, as
        the thread mode gives up on it (``skipped``, ``primary_timeout``). The link's sweep."""
        try:
            self._client.send(self, self._body, Reason.PRIMARY_TIMEOUT, None, "", b"", 0.0)
        except Exception as exc:
            self._client.error(exc)


class HelperClient:
    """The app side of ``isolation="process"`` for one engine, in place of the thread mode's
    ``Pipeline``: the live sample rates (``states``), the outcome counters; the helper itself
    is this process's :class:`~._helperlink.HelperLink`, shared with every other engine.

    Parameters:
        config: the engine's configuration.
        rates: the live sample rate of each target, by name.
    """

    def __init__(self, config: ShadowConfig, rates: dict[str, float]) -> None:
        self.config = config
        self.pid = os.getpid()
        self.max_body_bytes = config.max_body_bytes
        self.max_response_bytes = config.max_response_bytes
        # How long a capture waits for production's answer before it is sent without one: the
        # thread mode's longest wait (the candidate's timeout, then primary_timeout).
        self.overdue_after = config.primary_timeout + max((t.timeout for t in config.targets), default=0.0)
        self.states = {
            t.name: TargetState(t, rates[t.name], CircuitBreaker(0, 1.0, t.name)) for t in config.targets
        }
        self._index = {t.name: i for i, t in enumerate(config.targets)}
        self._names = [t.name for t in config.targets]
        # Credentials never leave the app process, but for a header a sample key or the
        # correlation id is read from (the helper needs it; it never forwards it).
        sources = {
            s.name
            for s in (config.sample_source, config.correlation_source)
            if s is not None and s.kind == "header"
        }
        rules = config.header_filter
        self._withheld = HeaderFilter(rules.drop, rules.forward | sources, rules.rule).withheld
        self._config_data = config_data(config)
        self.counts = [[0] * len(OUTCOMES) for _ in config.targets]
        # Exchanges counted here, not yet in the helper's shadow.requests metric.
        self._uncounted: dict[tuple[int, str, str, str], int] = {}
        self.closed = False
        self.errors = 0
        self.helper_errors = 0
        self.cpu_budget = config.cpu_budget  # live: Shadow.set_cpu_budget changes it
        self._link = process_link()
        self._started_before = self._link.started
        self.engine = self._link.register(self)

    def config_frame(self, engine: int) -> bytes:
        return frame((CONFIG, engine, self._config_data, list(sys.path), os.getpid()))

    # ---- what the engine reads ---------------------------------------------------------

    @property
    def internal_errors(self) -> int:
        return self.errors + self.helper_errors

    @property
    def helpers_started(self) -> int:
        """Helpers this process started since this engine was made."""
        return self._link.started - self._started_before

    def helper_pid(self) -> int | None:
        """The running helper's process id (None: none is running)."""
        helper = self._link.helper
        if helper is None or helper.lost or helper.proc is None:
            return None
        return helper.proc.pid

    def stats_by_target(self) -> dict[str, dict[str, int]]:
        with self._link.lock:
            return {
                name: dict(zip(OUTCOMES, self.counts[i], strict=True)) for i, name in enumerate(self._names)
            }

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        log_error(exc)

    def open(self, request: Request, chosen: list[TargetState], deferred: bool) -> Capture:
        return Capture(self, request, chosen, deferred)

    def full(self) -> bool:
        """The socket to the helper was full at the last write (part of a message waits): a new
        exchange is refused before anything is copied, as it would be dropped once copied."""
        return bool(self._link.out) and self._link.helper is not None

    def refuse(self, request: Request, chosen: list[TargetState], reason: Reason) -> None:
        """Refuse a request's shadows at admission, before any copy (``dropped``, ``reason``)."""
        index = self._index
        targets = tuple(index[s.target.name] for s in chosen)
        with self._link.lock:
            self.count_locked(request.route, targets, _DROPPED, reason)

    def release(self) -> None:
        """The engine was collected without ``close()``: its pipeline in the helper ends."""
        if self.pid == os.getpid() and not self.closed:
            self._link.release(self.engine)

    # ---- sending (request threads) -------------------------------------------------------

    def watch(self, cap: Capture) -> None:
        cap.deadline = time.monotonic() + self.overdue_after
        self._link.watch(cap)

    def send(
        self,
        cap: Capture,
        body: bytes | None,
        reason: str | None,
        status: int | None,
        encoding: str,
        resp: bytes,
        primary_ms: float,
    ) -> None:
        """Hand one exchange to the helper, or count why it could not be."""
        link = self._link
        lock = link.lock
        with lock:
            # Once only: the request thread and the overdue sweep may both get here.
            if cap.claimed:
                return
            cap.claimed = True
            link.pending.pop(id(cap), None)
        index = self._index
        targets = tuple(index[s.target.name] for s in cap.states)
        route = cap.request.route
        try:
            traceparent, tracestate = trace_context(cap.ctx)
            withheld = self._withheld
            request = cap.request
            headers = [(k, v) for k, v in request.headers if not withheld(k)]
            rates = tuple(s.rate for s in cap.states) if cap.deferred else ()
            seq = next(link.seqs)
            data = Exchange(
                seq,
                self.engine,
                Request(request.route, request.method, request.path, request.query, headers),
                targets,
                rates,
                cap.deferred,
                body,
                None if reason is None else str(reason),
                status,
                encoding,
                resp,
                primary_ms,
                traceparent,
                tracestate,
            ).encode()
        except Exception as exc:
            self.error(exc)
            with lock:
                self.count_locked(route, targets, _SKIPPED, Reason.INTERNAL_ERROR)
            return
        with lock:
            dropped = Reason.SHUTDOWN if self.closed else link.send_locked(self, seq, data, route, targets)
            if dropped is not None:
                self.count_locked(route, targets, _DROPPED, dropped)
            elif self._uncounted and not link.out:  # all of it went: the counts may follow
                self.queue_counts_locked(link)

    def count_locked(self, route: str, targets: tuple[int, ...], outcome: int, reason: str) -> None:
        """Count an outcome decided here; the helper gets it for its metric and, for a
        refusal, the coalesced span of its interval (``shadow.coalesced_count``)."""
        counts = self.counts
        uncounted = self._uncounted
        name = OUTCOMES[outcome]
        for t in targets:
            counts[t][outcome] += 1
            key = (t, route, name, str(reason))
            uncounted[key] = uncounted.get(key, 0) + 1

    def queue_counts_locked(self, link: HelperLink) -> None:
        """Send the outcomes counted here to the helper's metric (in order, never dropped)."""
        helper = link.helper
        if not self._uncounted or helper is None:
            return
        items = [(t, route, outcome, n, reason) for (t, route, outcome, reason), n in self._uncounted.items()]
        self._uncounted = {}
        link.out.append(memoryview(frame((COUNTS, self.engine, items))))
        link.write_locked(helper)

    def _inflight_locked(self) -> list[int]:
        return [seq for seq, entry in self._link.inflight.items() if entry[0] is self]

    # ---- flush / close (any thread but the request's) -------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until the helper has finished every exchange sent so far, recorded its spans
        and flushed its exporters; False if that did not happen within ``timeout``."""
        deadline = time.monotonic() + timeout
        link = self._link
        with link.cond:
            helper = link.helper
            if helper is None or self.pid != os.getpid():
                return not self._inflight_locked()
            flush_id = next(link.flush_ids)
            self.queue_counts_locked(link)
            link.out.append(memoryview(frame((FLUSH, self.engine, flush_id, max(timeout - 0.05, 0.0)))))
            link.write_locked(helper)
            while flush_id not in link.flushed:
                remaining = deadline - time.monotonic()
                if helper.lost or remaining <= 0:
                    return False
                link.cond.wait(min(remaining, 0.05))
            return link.flushed.pop(flush_id)

    def close(self, timeout: float) -> None:
        """Drain this engine's exchanges in the helper within ``timeout`` (it cancels and
        counts what is left, as the thread mode does); what never came back is ``dropped``
        (``shutdown``). The last engine of the process to close lets the helper exit."""
        deadline = time.monotonic() + timeout
        link = self._link
        with link.cond:
            if self.closed:
                return
            self.closed = True
            link.clients.pop(self.engine, None)
            helper = link.helper
            if helper is not None and self.pid == os.getpid():
                self.queue_counts_locked(link)
                link.out.append(memoryview(frame((CLOSE, self.engine, timeout))))
                link.write_locked(helper)
                # The helper drains within ``timeout`` (its dispatcher may take 2 s more to cancel),
                # then flushes its exporters (>= 0.5 s).
                until = deadline + 3.0
                while not helper.lost and self.engine not in link.closed and time.monotonic() < until:
                    link.cond.wait(min(until - time.monotonic(), 0.05))
                link.closed.pop(self.engine, None)
            for seq in self._inflight_locked():
                _, route, targets, _ = link.inflight.pop(seq)
                self.count_locked(route, targets, _DROPPED, Reason.SHUTDOWN)
            last = not link.clients
            if last:
                link._stop_if_unused_locked()
        if last and helper is not None and helper.proc is not None and self.pid == os.getpid():
            try:
                helper.proc.wait(timeout=max(deadline + 4.0 - time.monotonic(), 0.5))
            except subprocess.TimeoutExpired:
                helper.proc.kill()

    def after_fork_in_child(self) -> None:
        """Nothing of this engine's is open in a forked child: the link closes its sockets
        there (``_after_fork_in_child``)."""
