"""The helper process's lifecycle, from the app's side (``isolation="process"``).

:class:`HelperLink` is this process's one helper, shared by every engine in it: it spawns the
helper (lazily, with a backoff after a crash), owns the socket and what waits to be written,
the in-flight books by sequence number, the engines' registrations, and counts what a lost
helper had not reported. Its :class:`_IOThread` reads the helper's reports. The engines'
side (``_isolation.HelperClient``) and the messages (``_helperwire``) are elsewhere.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Protocol

from ._config import ShadowConfig
from ._helperwire import (
    _DROPPED,
    _NOSIGNAL,
    CLOSE,
    CLOSED,
    FAILED,
    FLUSHED,
    OUTCOME_SLOTS,
    OUTCOMES_MSG,
    FrameReader,
    frame,
)
from ._outcomes import Reason

__all__ = ["HelperLink", "log_error", "process_link"]

logger = logging.getLogger("shadow_middleware")

#: The app's send buffer (the kernel caps it at net.core.wmem_max and doubles it): the queue
#: between app and helper, in bytes, per app process.
SEND_BUFFER = 2 * 1024 * 1024
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 30.0
#: A helper that lived this long resets the backoff.
HEALTHY_AFTER = 60.0


class _Engine(Protocol):
    """What the link reads and calls of one engine's client (``_isolation.HelperClient``)."""

    config: ShadowConfig
    closed: bool
    errors: int
    helper_errors: int
    counts: list[list[int]]

    def config_frame(self, engine: int) -> bytes: ...

    def queue_counts_locked(self, link: HelperLink) -> None: ...

    def count_locked(self, route: str, targets: tuple[int, ...], outcome: int, reason: str) -> None: ...


class _Pending(Protocol):
    """A capture whose message waits for production's answer (``_isolation.Capture``)."""

    deadline: float

    def overdue(self) -> None: ...


class _Helper:
    """One helper process and its socket."""

    __slots__ = ("child", "lost", "proc", "sock", "started")

    def __init__(self, sock: socket.socket, child: socket.socket) -> None:
        self.sock = sock
        self.child: socket.socket | None = child
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.lost = False  # EOF seen (or it never started): its in-flight messages are counted


class HelperLink:
    """This process's one helper, shared by every engine in it (as the thread mode shares one
    background thread, ``_loop``): a process that builds an engine per test or per app must
    not grow a helper per engine. Owns the socket, the reader thread, the restart backoff,
    what is in flight (by sequence number, over all engines) and the engines' registrations.

    Every engine registers a :class:`_Engine`; its configuration travels as a CONFIG
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
        self.clients: dict[int, _Engine] = {}  # open engines, by engine id
        # What a helper reports after its engine was closed or collected still finds its books.
        self.known: weakref.WeakValueDictionary[int, _Engine] = weakref.WeakValueDictionary()
        self.released: deque[int] = deque()  # engines collected without close(): appended by GC
        self.inflight: dict[int, tuple[_Engine, str, tuple[int, ...], _Helper]] = {}
        self.out: deque[memoryview] = deque()  # written in order before anything new
        self.helper: _Helper | None = None
        self.spawn: deque[_Helper] = deque()
        self.thread: threading.Thread | None = None
        self.retry_at = 0.0
        self.backoff = FIRST_BACKOFF
        self.flushed: dict[int, bool] = {}
        self.closed: dict[int, bool] = {}  # the helper's answer to an engine's CLOSE
        self.started = 0  # helpers started by this process
        # _Pendings whose request body is complete and whose message is not sent yet: a response
        # never closed still ends in an outcome (``primary_timeout``), as in the thread mode.
        self.pending: dict[int, _Pending] = {}
        self.next_sweep = 0.0
        self.asleep = False

    # ---- registration -------------------------------------------------------------------

    def register(self, client: _Engine) -> int:
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

    def send_locked(
        self, client: _Engine, seq: int, data: bytes, route: str, targets: tuple[int, ...]
    ) -> Reason | None:
        """Write one exchange's message ``data`` without blocking; it is in flight until the
        helper reports its outcomes. Returns why it was dropped instead, if it was."""
        helper = self.helper_locked()
        if helper is None:
            return Reason.HELPER_RESTART  # lost, waiting
        if self.out and not self.write_locked(helper):
            return Reason.QUEUE_FULL  # the socket is full
        self.inflight[seq] = (client, route, targets, helper)
        try:
            sent = helper.sock.send(data, _NOSIGNAL)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The helper is gone; the reader thread sees its EOF and counts what it had.
            del self.inflight[seq]
            return Reason.HELPER_RESTART
        if sent == 0:
            del self.inflight[seq]
            return Reason.QUEUE_FULL
        if sent < len(data):
            self.out.append(memoryview(data)[sent:])
        return None

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
            self.thread = threading.Thread(target=_IOThread(self).run, name="shadow-helper-io", daemon=True)
            self.thread.start()

    def watch(self, cap: _Pending) -> None:
        """Keep ``cap`` until its message is sent, or send it when its production answer is
        overdue (request thread, body complete)."""
        with self.lock:
            self.pending[id(cap)] = cap
            self._ensure_thread_locked()
            if self.asleep:
                self.asleep = False
                self.cond.notify_all()

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


class _IOThread:
    """The link's one thread: spawns each helper (see ``_isolation``'s docstring for why here),
    reads its reports, writes what the socket could not take at once, notices its end, and
    sweeps overdue captures."""

    def __init__(self, link: HelperLink) -> None:
        self.link = link

    def _sweep(self) -> None:
        """Send the captures whose answer is overdue, as ``no answer: primary_timeout``."""
        now = time.monotonic()
        if now < self.link.next_sweep:
            return
        self.link.next_sweep = now + SWEEP_EVERY
        with self.link.lock:
            if not self.link.pending:
                return
            overdue = [c for c in self.link.pending.values() if c.deadline <= now]
        for cap in overdue:
            cap.overdue()

    def run(self) -> None:
        """The reader thread: spawns each helper (see the module docstring for why here),
        reads its reports, writes what the socket could not take at once, notices its end,
        and sweeps overdue captures."""
        while True:
            with self.link.cond:
                self.link._released_locked()
                if not self.link.spawn:
                    self.link.asleep = not (
                        self.link.pending or self.link.released
                    )  # until a capture is watched
                    self.link.cond.wait(None if self.link.asleep else SWEEP_EVERY)
                    self.link.asleep = False
                helper = self.link.spawn.popleft() if self.link.spawn else None
            if helper is None:
                self._sweep()
                continue
            try:
                self._serve(helper)
            except Exception as exc:  # never leave a dead helper in place: count it and go on
                log_error(exc)
                for client in list(self.link.clients.values())[:1]:
                    client.errors += 1
                with self.link.cond:
                    self.link._lost_locked(helper, f"could not be served: {exc!r}")
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
        quiet = "1" if self.link.started else "0"  # the telemetry warning: once per app process
        try:
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            # The environment is inherited as the C library holds it at exec (env=None): never
            # copied from os.environ here, where another thread may be changing it.
            helper.proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER_MAIN, here, str(child.fileno()), str(self.link.pid), quiet],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            self.link.started += 1
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
        with self.link.cond:
            self.link._lost_locked(helper, why)

    def _read(self, helper: _Helper) -> None:
        sock = helper.sock
        reader = FrameReader()
        poller = select.poll()  # not select(): an app may hold more than 1024 descriptors
        fd = sock.fileno()
        while True:
            pending = bool(self.link.out)
            poller.register(fd, select.POLLIN | (select.POLLOUT if pending else 0))
            try:
                events = poller.poll(50 if pending else 250)
            except OSError:
                return
            mask = events[0][1] if events else 0
            if mask & select.POLLOUT:
                with self.link.lock:
                    if self.link.helper is helper:
                        self.link.write_locked(helper)
            if self.link.released:
                with self.link.lock:
                    self.link._released_locked()
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
                    log_error(exc)

    def _handle(self, message: Any) -> None:
        kind = message[0]
        if kind == OUTCOMES_MSG:
            _, finished, errors = message
            with self.link.lock:
                inflight = self.link.inflight
                for seq, codes in finished:
                    entry = inflight.pop(seq, None)
                    if entry is None:
                        continue  # already counted as lost (a close that gave up on it): once only
                    counts = entry[0].counts
                    for code in codes:
                        counts[code // OUTCOME_SLOTS][code % OUTCOME_SLOTS] += 1
                for engine, n in errors:
                    client = self.link.known.get(engine)
                    if client is not None:
                        client.helper_errors += n
        elif kind == FLUSHED:
            with self.link.cond:
                self.link.flushed[message[1]] = bool(message[2])
                self.link.cond.notify_all()
        elif kind == CLOSED:
            with self.link.cond:
                self.link.closed[message[1]] = bool(message[2])
                self.link.cond.notify_all()
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


#: Run by the helper's interpreter: this package importable from where it is, then its main.
_HELPER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from shadow_middleware._helper import main; sys.exit(main(sys.argv[2:]))"
)
SWEEP_EVERY = 0.25

_link_lock = threading.Lock()
_link: HelperLink | None = None


def process_link() -> HelperLink:
    """This process's link, made on first use (a forked child makes its own)."""
    global _link
    link = _link
    if link is not None and link.pid == os.getpid():
        return link
    with _link_lock:
        if _link is None or _link.pid != os.getpid():
            _link = HelperLink()
        return _link


def _after_fork_in_child() -> None:
    global _link, _link_lock
    _link_lock = threading.Lock()
    link = _link
    if link is not None and link.pid != os.getpid():
        link.after_fork_in_child()
        _link = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def log_error(exc: BaseException) -> None:
    logger.warning("shadow_middleware internal error (ignored): %r", exc, exc_info=exc)
