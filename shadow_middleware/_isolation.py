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
  engine in it (:class:`_Link`; each engine's messages carry its id, the helper keeps a
  pipeline per engine): it serves only its parent and dies with it (EOF on the socket, and
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
import weakref
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
        "claimed",
        "deadline",
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
            else:
                self._client.watch(self)
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
        self._body = None
        self._client.send(self, body, reason, status, self._resp_encoding, resp, self._primary_ms)

    def overdue(self) -> None:
        """Production's answer never completed (a response never closed): sent without it, as
        the thread mode gives up on it (``skipped``, ``primary_timeout``). The link's sweep."""
        try:
            self._client.send(self, self._body, Reason.PRIMARY_TIMEOUT, None, "", b"", 0.0)
        except Exception as exc:
            self._client.error(exc)


# ---- the helper, from the app's side -----------------------------------------------------------


class _Helper:
    """One helper process and its socket."""

    __slots__ = ("child", "lost", "proc", "sock", "started")

    def __init__(self, sock: socket.socket, child: socket.socket) -> None:
        self.sock = sock
        self.child: socket.socket | None = child
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.lost = False  # EOF seen (or it never started): its in-flight messages are counted


class _Link:
    """This process's one helper, shared by every engine in it (as the thread mode shares one
    background thread, ``_loop``): a process that builds an engine per test or per app must
    not grow a helper per engine. Owns the socket, the reader thread, the restart backoff,
    what is in flight (by sequence number, over all engines) and the engines' registrations.

    Every engine registers a :class:`HelperClient`; its configuration travels as a CONFIG
    message under its engine id, and so do its exchanges, flushes and close. The helper keeps
    one pipeline per engine id. When the last open engine closes, the helper is told to exit
    (EOF); the next engine starts a new one.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.seqs = itertools.count(1)
        self.ids = itertools.count(1)
        self.flush_ids = itertools.count(1)
        self.clients: dict[int, HelperClient] = {}  # open engines, by engine id
        # What a helper reports after its engine was closed or collected still finds its books.
        self.known: weakref.WeakValueDictionary[int, HelperClient] = weakref.WeakValueDictionary()
        self.released: deque[int] = deque()  # engines collected without close(): appended by GC
        self.inflight: dict[int, tuple[HelperClient, str, tuple[int, ...], _Helper]] = {}
        self.out: deque[memoryview] = deque()  # written in order before anything new
        self.helper: _Helper | None = None
        self.spawn: deque[_Helper] = deque()
        self.thread: threading.Thread | None = None
        self.retry_at = 0.0
        self.backoff = FIRST_BACKOFF
        self.flushed: dict[int, bool] = {}
        self.closed: dict[int, bool] = {}  # the helper's answer to an engine's CLOSE
        self.started = 0  # helpers started by this process
        # Captures whose request body is complete and whose message is not sent yet: a response
        # never closed still ends in an outcome (``primary_timeout``), as in the thread mode.
        self.pending: dict[int, Capture] = {}
        self.next_sweep = 0.0
        self.asleep = False

    # ---- registration -------------------------------------------------------------------

    def register(self, client: HelperClient) -> int:
        with self.lock:
            engine = next(self.ids)
            self.clients[engine] = client
            self.known[engine] = client
            if self.helper is not None:
                self.out.append(memoryview(client.config_frame(engine)))
                self.write_locked(self.helper)
            return engine

    def release(self, engine: int) -> None:
        """The engine was garbage-collected without ``close()`` (called by its finalizer, on any
        thread, maybe inside a critical section of this very lock): only noted here, acted on
        by the reader thread."""
        self.released.append(engine)

    def _released_locked(self) -> None:
        while self.released:
            engine = self.released.popleft()
            client = self.clients.pop(engine, None)
            if client is None:
                continue
            client.closed = True
            helper = self.helper
            if helper is not None:
                client.queue_counts_locked(self)
                self.out.append(memoryview(frame((CLOSE, engine, client.config.drain_timeout))))
                self.write_locked(helper)
        self._stop_if_unused_locked()

    def _stop_if_unused_locked(self) -> None:
        """No open engine left: let the helper finish what it has and exit (EOF). It is
        detached at once: the next engine starts a new one (spawned by the reader thread
        once this one has exited), and what it still reports is counted as it arrives."""
        helper = self.helper
        if helper is None or self.clients:
            return
        try:
            helper.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.out.clear()
        self.helper = None
        self.retry_at = 0.0

    # ---- writing ------------------------------------------------------------------------

    def write_locked(self, helper: _Helper) -> bool:
        """Write what waits in ``out``, as far as the socket takes it; True when all is out."""
        out = self.out
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

    def helper_locked(self) -> _Helper | None:
        """The running helper, started if there is none (and no backoff forbids it yet)."""
        helper = self.helper
        if helper is not None:
            return helper
        if os.getpid() != self.pid or time.monotonic() < self.retry_at:
            return None
        return self._start_locked()

    # ---- the helper's lifecycle ---------------------------------------------------------

    def _start_locked(self) -> _Helper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass
        ours.setblocking(False)
        helper = _Helper(ours, theirs)
        while self.released:  # engines collected before: no pipeline for them
            self.clients.pop(self.released.popleft(), None)
        self.helper = helper
        self.out.clear()
        for engine, client in self.clients.items():
            self.out.append(memoryview(client.config_frame(engine)))
        for client in self.clients.values():
            client.queue_counts_locked(self)
        self.write_locked(helper)
        self.spawn.append(helper)
        self._ensure_thread_locked()
        self.cond.notify_all()
        return helper

    def _ensure_thread_locked(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="shadow-helper-io", daemon=True)
            self.thread.start()

    def watch(self, cap: Capture) -> None:
        """Keep ``cap`` until its message is sent, or send it when its production answer is
        overdue (request thread, body complete)."""
        with self.lock:
            self.pending[id(cap)] = cap
            self._ensure_thread_locked()
            if self.asleep:
                self.asleep = False
                self.cond.notify_all()

    def _sweep(self) -> None:
        """Send the captures whose answer is overdue, as ``no answer: primary_timeout``."""
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_EVERY
        with self.lock:
            if not self.pending:
                return
            overdue = [c for c in self.pending.values() if c.deadline <= now]
        for cap in overdue:
            cap.overdue()

    def _run(self) -> None:
        """The reader thread: spawns each helper (see the module docstring for why here),
        reads its reports, writes what the socket could not take at once, notices its end,
        and sweeps overdue captures."""
        while True:
            with self.cond:
                self._released_locked()
                if not self.spawn:
                    self.asleep = not (self.pending or self.released)  # until a capture is watched
                    self.cond.wait(None if self.asleep else SWEEP_EVERY)
                    self.asleep = False
                helper = self.spawn.popleft() if self.spawn else None
            if helper is None:
                self._sweep()
                continue
            try:
                self._serve(helper)
            except Exception as exc:  # never leave a dead helper in place: count it and go on
                _log_error(exc)
                for client in list(self.clients.values())[:1]:
                    client.errors += 1
                with self.cond:
                    self._lost_locked(helper, f"could not be served: {exc!r}")
            finally:
                # Whatever happened, neither end of the socketpair is left open.
                for sock in (helper.child, helper.sock):
                    if sock is not None:
                        try:
                            sock.close()
                        except OSError:
                            pass
                helper.child = None

    def _serve(self, helper: _Helper) -> None:
        child = helper.child
        assert child is not None
        why = "exited"
        quiet = "1" if self.started else "0"  # the telemetry warning: once per app process
        try:
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            # The environment is inherited as the C library holds it at exec (env=None): never
            # copied from os.environ here, where another thread may be changing it.
            helper.proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER_MAIN, here, str(child.fileno()), str(self.pid), quiet],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            self.started += 1
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
        with self.cond:
            self._lost_locked(helper, why)

    def _read(self, helper: _Helper) -> None:
        sock = helper.sock
        reader = FrameReader()
        poller = select.poll()  # not select(): an app may hold more than 1024 descriptors
        fd = sock.fileno()
        while True:
            pending = bool(self.out)
            poller.register(fd, select.POLLIN | (select.POLLOUT if pending else 0))
            try:
                events = poller.poll(50 if pending else 250)
            except OSError:
                return
            mask = events[0][1] if events else 0
            if mask & select.POLLOUT:
                with self.lock:
                    if self.helper is helper:
                        self.write_locked(helper)
            if self.released:
                with self.lock:
                    self._released_locked()
            self._sweep()
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
                    self._handle(message)
                except Exception as exc:
                    _log_error(exc)

    def _handle(self, message: Any) -> None:
        kind = message[0]
        if kind == OUTCOMES_MSG:
            _, finished, errors = message
            with self.lock:
                inflight = self.inflight
                for seq, codes in finished:
                    entry = inflight.pop(seq, None)
                    if entry is None:
                        continue  # already counted as lost (a close that gave up on it): once only
                    counts = entry[0].counts
                    for code in codes:
                        counts[code // OUTCOME_SLOTS][code % OUTCOME_SLOTS] += 1
                for engine, n in errors:
                    client = self.known.get(engine)
                    if client is not None:
                        client.helper_errors += n
        elif kind == FLUSHED:
            with self.cond:
                self.flushed[message[1]] = bool(message[2])
                self.cond.notify_all()
        elif kind == CLOSED:
            with self.cond:
                self.closed[message[1]] = bool(message[2])
                self.cond.notify_all()
        elif kind == FAILED:
            logger.error("shadow_middleware: the helper process could not start: %s", message[2])

    def _reap(self, helper: _Helper) -> None:
        proc = helper.proc
        assert proc is not None
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _lost_locked(self, helper: _Helper, why: str) -> None:
        """The helper is gone: count what it had not reported, and allow a restart (later)."""
        if helper.lost:
            return
        helper.lost = True
        lost = 0
        for seq, (client, route, targets, owner) in list(self.inflight.items()):
            if owner is helper:
                del self.inflight[seq]
                client.count_locked(route, targets, _DROPPED, Reason.HELPER_RESTART)
                lost += len(targets)
        self.cond.notify_all()
        if self.helper is not helper:
            return  # one that was asked to exit
        self.helper = None
        self.out.clear()
        now = time.monotonic()
        if now - helper.started >= HEALTHY_AFTER:
            self.backoff = FIRST_BACKOFF
        delay = self.backoff
        if not self.clients:
            self.retry_at = 0.0  # asked to exit: the next engine starts one at once
            return
        self.retry_at = now + delay
        self.backoff = min(delay * 2, MAX_BACKOFF)
        logger.warning(
            "shadow_middleware: the helper process %s; %d in-flight exchange(s) counted as "
            "dropped (helper_restart); a new one starts with the next request after %.2f s",
            why,
            lost,
            delay,
        )

    def after_fork_in_child(self) -> None:
        """A forked child holds copies of this link's sockets: close them there (never
        ``shutdown``, which would cut the parent's connection), so that the parent's helper
        still sees EOF when the parent goes."""
        helper = self.helper
        if helper is not None:
            if helper.proc is not None:
                helper.proc.returncode = 0  # not this process's child: never wait for it or warn
            for sock in (helper.sock, helper.child):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass


#: Run by the helper's interpreter: this package importable from where it is, then its main.
_HELPER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from shadow_middleware._helper import main; sys.exit(main(sys.argv[2:]))"
)
SWEEP_EVERY = 0.25

_link_lock = threading.Lock()
_link: _Link | None = None


def _process_link() -> _Link:
    """This process's link, made on first use (a forked child makes its own)."""
    global _link
    link = _link
    if link is not None and link.pid == os.getpid():
        return link
    with _link_lock:
        if _link is None or _link.pid != os.getpid():
            _link = _Link()
        return _link


def _after_fork_in_child() -> None:
    global _link, _link_lock
    _link_lock = threading.Lock()
    link = _link
    if link is not None and link.pid != os.getpid():
        link.after_fork_in_child()
        _link = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _log_error(exc: BaseException) -> None:
    logger.warning("shadow_middleware internal error (ignored): %r", exc, exc_info=exc)


class HelperClient:
    """The app side of ``isolation="process"`` for one engine, in place of the thread mode's
    ``Pipeline``: the live sample rates (``states``), the outcome counters; the helper itself
    is this process's :class:`_Link`, shared with every other engine.

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
        self._link = _process_link()
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
        _log_error(exc)

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

    def full(self) -> bool:
        """The socket to the helper was full at the last write (part of a message waits): a new
        exchange is refused before anything is copied, as it would be dropped once copied."""
        return bool(self._link.out) and self._link.helper is not None

    def refuse(
        self, route: str, method: str, path: str, query: str, chosen: list[TargetState], reason: Reason
    ) -> None:
        """Refuse a request's shadows at admission, before any copy (``dropped``, ``reason``)."""
        index = self._index
        targets = tuple(index[s.target.name] for s in chosen)
        with self._link.lock:
            self.count_locked(route, targets, _DROPPED, reason)

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
        try:
            traceparent, tracestate = trace_context(cap.ctx)
            withheld = self._withheld
            headers = [(k, v) for k, v in cap.headers if not withheld(k)]
            rates = tuple(s.rate for s in cap.states) if cap.deferred else ()
            seq = next(link.seqs)
            data = frame(
                (
                    EXCHANGE,
                    seq,
                    self.engine,
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
            with lock:
                self.count_locked(cap.route, targets, _SKIPPED, Reason.INTERNAL_ERROR)
            return
        with lock:
            if self.closed:
                self.count_locked(cap.route, targets, _DROPPED, Reason.SHUTDOWN)
                return
            helper = link.helper_locked()
            if helper is None:
                self.count_locked(cap.route, targets, _DROPPED, Reason.HELPER_RESTART)  # lost, waiting
                return
            if link.out and not link.write_locked(helper):
                self.count_locked(cap.route, targets, _DROPPED, Reason.QUEUE_FULL)  # the socket is full
                return
            link.inflight[seq] = (self, cap.route, targets, helper)
            try:
                sent = helper.sock.send(data, _NOSIGNAL)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The helper is gone; the reader thread sees its EOF and counts what it had.
                del link.inflight[seq]
                self.count_locked(cap.route, targets, _DROPPED, Reason.HELPER_RESTART)
                return
            if sent == 0:
                del link.inflight[seq]
                self.count_locked(cap.route, targets, _DROPPED, Reason.QUEUE_FULL)
                return
            if sent < len(data):
                link.out.append(memoryview(data)[sent:])
            elif self._uncounted:
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

    def queue_counts_locked(self, link: _Link) -> None:
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
