"""``isolation="process"``, the app's side: copy each exchange, hand it to a helper process.

The app process keeps only what must happen where the request is: routing, sampling, the
capped copies of the request and of production's answer (:class:`Capture`, the tap of this
mode). When production's answer is complete it serializes ONE message per request and
writes it, without ever blocking, to a private socket shared with a helper process
(``_helper``) that runs the thread mode's whole machinery (the pipeline, dispatcher, HTTP
client, comparison, circuit breaker, spans and metrics) in its own interpreter, with its
own GIL.

* **Private**: a ``socketpair`` (AF_UNIX), made before the helper is spawned and handed to it
  alone (``pass_fds``); nothing else can connect. One helper per app process: it serves
  only its parent and dies with it (EOF on the socket, and ``PR_SET_PDEATHSIG`` on Linux).
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
"""

from __future__ import annotations

import itertools
import logging
import marshal
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from ._circuit import CircuitBreaker
from ._config import ShadowConfig, config_data
from ._dispatch import TargetState
from ._outcomes import OUTCOMES, Outcome, Reason
from ._tap import CappedCopy
from ._telemetry import trace_context
from ._wire import HeaderFilter

__all__ = ["Capture", "FrameReader", "HelperClient", "frame"]

logger = logging.getLogger("shadow_middleware")

# ---- the wire between app and helper -------------------------------------------------------

_LEN = struct.Struct("<I")
#: App -> helper: the configuration (first message), an exchange, outcome counts for the
#: metric, a flush request, the close request.
CONFIG, EXCHANGE, COUNTS, FLUSH, CLOSE = "config", "x", "n", "flush", "close"
#: Helper -> app: outcomes of finished exchanges, a flush done, close done, a startup failure.
OUTCOMES_MSG, FLUSHED, CLOSED, FAILED = "o", "flushed", "closed", "failed"
#: An outcome travels as ``target index * OUTCOME_SLOTS + outcome index``.
OUTCOME_SLOTS = 8
_DROPPED = OUTCOMES.index(Outcome.DROPPED)
#: A send to a helper that is gone fails with EPIPE instead of raising SIGPIPE (an embedding
#: server may not ignore it as CPython does).
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_SKIPPED = OUTCOMES.index(Outcome.SKIPPED)

#: The app's send buffer (the kernel caps it at net.core.wmem_max and doubles it): the queue
#: between app and helper, in bytes, per app process.
SEND_BUFFER = 2 * 1024 * 1024
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 30.0
#: A helper that lived this long resets the backoff.
HEALTHY_AFTER = 60.0


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


# ---- the tap of this mode --------------------------------------------------------------------


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
        "deferred",
        "states",
    )

    def __init__(
        self,
        client: HelperClient,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        states: list[TargetState],
        deferred: bool,
    ) -> None:
        super().__init__(
            route, method, path, query, headers, client.max_body_bytes, client.max_response_bytes
        )
        self._client = client
        self.states = states
        self.deferred = deferred
        self._body: bytes | None = None
        self._primary_ms = 0.0
        self._sent = False

    def skip_all(self, reason: Reason) -> None:
        """End the exchange for every chosen target as ``skipped`` (in the helper)."""
        if not self._sent:
            self._send(None, reason, None)

    def _fail(self, exc: BaseException) -> None:
        self._broken = True
        self._client.error(exc)

    def _wants_response(self) -> bool:
        return not (self._over or self._sent)

    def body_complete(self) -> None:
        if self._body_done or self._broken:
            return
        self._body_done = True
        try:
            if self._over:
                self.skip_all(Reason.BODY_TOO_LARGE)
                return
            self._body = b"".join(self._chunks)
            self._chunks = []
            if self._resp_done:
                # The app answered before it finished reading the body: compare with that answer.
                self._send(self._body, None, self._resp_status)
        except Exception as exc:
            self._fail(exc)

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
        self._client.send(self, body, reason, status, self._resp_encoding, resp, self._primary_ms)


# ---- the helper, from the app's side -----------------------------------------------------------


class _Helper:
    """One helper process and its socket."""

    __slots__ = ("child", "closed", "lost", "proc", "sock", "started")

    def __init__(self, sock: socket.socket, child: socket.socket) -> None:
        self.sock = sock
        self.child: socket.socket | None = child
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.lost = False  # EOF seen (or it never started): its in-flight messages are counted
        self.closed: bool | None = None  # the helper's answer to CLOSE


class HelperClient:
    """The app side of ``isolation="process"``, in place of the thread mode's ``Pipeline``:
    the live sample rates (``states``), the outcome counters, and the helper's lifecycle.

    Parameters:
        config: the engine's configuration.
        rates: the live sample rate of each target, by name.
    """

    def __init__(self, config: ShadowConfig, rates: dict[str, float]) -> None:
        self.config = config
        self.pid = os.getpid()
        self.max_body_bytes = config.max_body_bytes
        self.max_response_bytes = config.max_response_bytes
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
        self._config_frame = frame((CONFIG, config_data(config), list(sys.path), os.getpid()))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._seqs = itertools.count(1)
        self._counts = [[0] * len(OUTCOMES) for _ in config.targets]
        # Exchanges counted here, not yet in the helper's shadow.requests metric.
        self._uncounted: dict[tuple[int, str, str], int] = {}
        self._inflight: dict[int, tuple[str, tuple[int, ...]]] = {}
        self._out: deque[memoryview] = deque()  # written in order before anything new
        self._helper: _Helper | None = None
        self._spawn: deque[_Helper] = deque()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF
        self._flush_ids = itertools.count(1)
        self._flushed: dict[int, bool] = {}
        self._closed = False
        self._stopping = False
        self._errors = 0
        self._helper_errors = 0
        self.helpers_started = 0

    # ---- what the engine reads ---------------------------------------------------------

    @property
    def internal_errors(self) -> int:
        return self._errors + self._helper_errors

    def helper_pid(self) -> int | None:
        """The running helper's process id (None: none is running)."""
        helper = self._helper
        if helper is None or helper.lost or helper.proc is None:
            return None
        return helper.proc.pid

    def stats_by_target(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                name: dict(zip(OUTCOMES, self._counts[i], strict=True)) for i, name in enumerate(self._names)
            }

    def error(self, exc: BaseException) -> None:
        self._errors += 1
        logger.warning("shadow_middleware internal error (ignored): %r", exc, exc_info=exc)

    def open(
        self,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        chosen: list[TargetState],
        deferred: bool,
    ) -> Capture:
        return Capture(self, route, method, path, query, headers, chosen, deferred)

    # ---- sending (request threads) -------------------------------------------------------

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
        index = self._index
        targets = tuple(index[s.target.name] for s in cap.states)
        try:
            traceparent, tracestate = trace_context(cap.ctx)
            withheld = self._withheld
            headers = [(k, v) for k, v in cap.headers if not withheld(k)]
            rates = tuple(s.rate for s in cap.states) if cap.deferred else ()
            seq = next(self._seqs)
            data = frame(
                (
                    EXCHANGE,
                    seq,
                    cap.route,
                    cap.method,
                    cap.path,
                    cap.query,
                    headers,
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
                )
            )
        except Exception as exc:
            self.error(exc)
            with self._lock:
                self._count_locked(cap.route, targets, _SKIPPED)
            return
        with self._lock:
            if self._closed:
                self._count_locked(cap.route, targets, _DROPPED)
                return
            helper = self._helper_locked()
            if helper is None:
                self._count_locked(cap.route, targets, _DROPPED)  # lost, waiting for a restart
                return
            if self._out and not self._write_locked(helper):
                self._count_locked(cap.route, targets, _DROPPED)  # the socket is full: queue_full
                return
            self._inflight[seq] = (cap.route, targets)
            try:
                sent = helper.sock.send(data, _NOSIGNAL)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The helper is gone; the reader thread sees its EOF and counts what it had.
                del self._inflight[seq]
                self._count_locked(cap.route, targets, _DROPPED)
                return
            if sent == 0:
                del self._inflight[seq]
                self._count_locked(cap.route, targets, _DROPPED)
                return
            if sent < len(data):
                self._out.append(memoryview(data)[sent:])
            elif self._uncounted:
                self._queue_counts_locked(helper)

    def _count_locked(self, route: str, targets: tuple[int, ...], outcome: int) -> None:
        counts = self._counts
        uncounted = self._uncounted
        name = OUTCOMES[outcome]
        for t in targets:
            counts[t][outcome] += 1
            key = (t, route, name)
            uncounted[key] = uncounted.get(key, 0) + 1

    def _queue_counts_locked(self, helper: _Helper) -> None:
        """Send the outcomes counted here to the helper's metric (in order, never dropped)."""
        if not self._uncounted:
            return
        items = [(t, route, outcome, n) for (t, route, outcome), n in self._uncounted.items()]
        self._uncounted = {}
        self._out.append(memoryview(frame((COUNTS, items))))
        self._write_locked(helper)

    def _write_locked(self, helper: _Helper) -> bool:
        """Write what waits in ``_out``, as far as the socket takes it; True when all is out."""
        out = self._out
        while out:
            chunk = out[0]
            try:
                sent = helper.sock.send(chunk, _NOSIGNAL)
            except BlockingIOError:
                return False
            except OSError:
                return False  # gone: the reader thread sees the EOF
            if sent < len(chunk):
                out[0] = chunk[sent:]
                return False
            out.popleft()
        return True

    def _helper_locked(self) -> _Helper | None:
        """The running helper, started if there is none (and no backoff forbids it yet)."""
        helper = self._helper
        if helper is not None:
            return helper
        if self._pid_changed() or time.monotonic() < self._retry_at:
            return None
        return self._start_locked()

    def _pid_changed(self) -> bool:
        return os.getpid() != self.pid

    # ---- the helper's lifecycle -------------------------------------------------------------

    def _start_locked(self) -> _Helper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass
        ours.setblocking(False)
        helper = _Helper(ours, theirs)
        self._helper = helper
        self._out.clear()
        self._out.append(memoryview(self._config_frame))
        self._write_locked(helper)
        self._queue_counts_locked(helper)
        self._spawn.append(helper)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-helper-io", daemon=True)
            self._thread.start()
        else:
            self._cond.notify_all()
        return helper

    def _run(self) -> None:
        """The reader thread: spawns each helper (see the module docstring for why here),
        reads its reports, writes what the socket could not take at once, notices its end."""
        while True:
            with self._cond:
                while not self._spawn and not self._stopping:
                    self._cond.wait()
                if not self._spawn:
                    return
                helper = self._spawn.popleft()
            try:
                self._serve(helper)
            except Exception as exc:  # never leave a dead helper in place: count it and go on
                self.error(exc)
                with self._cond:
                    self._lost_locked(helper, f"could not be served: {exc!r}")

    def _serve(self, helper: _Helper) -> None:
        child = helper.child
        assert child is not None
        why = "exited"
        try:
            helper.proc = subprocess.Popen(
                [sys.executable, "-m", "shadow_middleware._helper", str(child.fileno()), str(self.pid)],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_helper_env(),
            )
            self.helpers_started += 1
        except OSError as exc:
            why = f"could not be started: {exc}"
        finally:
            child.close()
            helper.child = None
        if helper.proc is not None:
            self._read(helper)
            self._reap(helper)
            code = helper.proc.returncode
            why = f"exited with {code}" if code is not None else "stopped answering"
        with self._cond:
            self._lost_locked(helper, why)
        helper.sock.close()

    def _read(self, helper: _Helper) -> None:
        sock = helper.sock
        reader = FrameReader()
        poller = select.poll()  # not select(): an app may hold more than 1024 descriptors
        fd = sock.fileno()
        while True:
            pending = bool(self._out)
            poller.register(fd, select.POLLIN | (select.POLLOUT if pending else 0))
            try:
                events = poller.poll(50 if pending else 500)
            except OSError:
                return
            mask = events[0][1] if events else 0
            if mask & select.POLLOUT:
                with self._lock:
                    if self._helper is helper:
                        self._write_locked(helper)
            if not mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                continue
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return  # EOF: the helper has exited (or closed its end)
            for message in reader.feed(data):
                try:
                    self._handle(helper, message)
                except Exception as exc:
                    self.error(exc)

    def _handle(self, helper: _Helper, message: Any) -> None:
        kind = message[0]
        if kind == OUTCOMES_MSG:
            _, finished, errors = message
            with self._lock:
                counts = self._counts
                inflight = self._inflight
                for seq, codes in finished:
                    if inflight.pop(seq, None) is None:
                        continue  # already counted as lost (a close that gave up on it): once only
                    for code in codes:
                        counts[code // OUTCOME_SLOTS][code % OUTCOME_SLOTS] += 1
                self._helper_errors += errors
        elif kind == FLUSHED:
            with self._cond:
                self._flushed[message[1]] = bool(message[2])
                self._cond.notify_all()
        elif kind == CLOSED:
            with self._cond:
                helper.closed = bool(message[1])
                self._cond.notify_all()
        elif kind == FAILED:
            logger.error("shadow_middleware: the helper process could not start: %s", message[1])

    def _reap(self, helper: _Helper) -> None:
        proc = helper.proc
        assert proc is not None
        try:
            proc.wait(timeout=self.config.drain_timeout + 5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _lost_locked(self, helper: _Helper, why: str) -> None:
        """The helper is gone: count what it had not reported, and allow a restart (later)."""
        if helper.lost:
            return
        helper.lost = True
        if self._helper is not helper:
            return
        self._helper = None
        self._out.clear()
        lost = 0
        for route, targets in self._inflight.values():
            self._count_locked(route, targets, _DROPPED)
            lost += len(targets)
        self._inflight.clear()
        now = time.monotonic()
        if now - helper.started >= HEALTHY_AFTER:
            self._backoff = FIRST_BACKOFF
        delay = self._backoff
        self._retry_at = now + delay
        self._backoff = min(delay * 2, MAX_BACKOFF)
        self._cond.notify_all()
        if not self._closed:
            logger.warning(
                "shadow_middleware: the helper process %s; %d in-flight exchange(s) counted as "
                "dropped (helper_restart); a new one starts with the next request after %.2f s",
                why,
                lost,
                delay,
            )

    # ---- flush / close (any thread but the request's) -------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until the helper has finished every exchange sent so far, recorded its spans
        and flushed its exporters; False if that did not happen within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            helper = self._helper
            if helper is None or self._pid_changed():
                return not self._inflight
            flush_id = next(self._flush_ids)
            self._queue_counts_locked(helper)
            self._out.append(memoryview(frame((FLUSH, flush_id, max(timeout - 0.05, 0.0)))))
            self._write_locked(helper)
            while flush_id not in self._flushed:
                remaining = deadline - time.monotonic()
                if helper.lost or remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return self._flushed.pop(flush_id)

    def close(self, timeout: float) -> None:
        """Drain the helper within ``timeout`` (it cancels and counts what is left, as the
        thread mode does), then let it exit; what never came back is ``dropped``
        (``shutdown``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed:
                return
            self._closed = True
            helper = self._helper
            if helper is not None and not self._pid_changed():
                self._queue_counts_locked(helper)
                self._out.append(memoryview(frame((CLOSE, timeout))))
                self._write_locked(helper)
                # The helper drains within ``timeout`` (its dispatcher may take 2 s more to cancel),
                # then flushes its exporters (>= 0.5 s).
                until = deadline + 3.0
                while not helper.lost and helper.closed is None and time.monotonic() < until:
                    self._cond.wait(min(until - time.monotonic(), 0.05))
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if helper is not None and helper.proc is not None:
            try:
                helper.proc.wait(timeout=max(deadline + 4.0 - time.monotonic(), 0.5))
            except subprocess.TimeoutExpired:
                helper.proc.kill()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        with self._cond:
            if helper is not None:
                self._lost_locked(helper, "closed")

    def after_fork_in_child(self) -> None:
        """A forked child holds copies of this client's sockets: close them there (never
        ``shutdown``, which would cut the parent's connection), so that the parent's helper
        still sees EOF when the parent goes."""
        helper = self._helper
        if helper is not None:
            if helper.proc is not None:
                helper.proc.returncode = 0  # not this process's child: never wait for it or warn
            for sock in (helper.sock, helper.child):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass


def _helper_env() -> dict[str, str]:
    """The helper's environment: the app's, and this package importable from where it is."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = here if not path else here + os.pathsep + path
    return env
