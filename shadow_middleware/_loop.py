"""The one background thread of a process: an asyncio loop every engine's dispatcher shares.

Why a thread of its own rather than the app's loop: WSGI apps have no loop, and an ASGI
app's loop may be short-lived (a test client runs each request in a fresh loop). Why one
per process rather than one per engine: a process that builds many engines (a test suite
that builds an app per test) must not grow a thread per engine. Started on first use in
each process, so a server that forks workers after importing the app (gunicorn
``--preload``) gets one per worker and none in the master.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

__all__ = ["THREAD_NAME", "background_loop", "background_thread_id"]

THREAD_NAME = "shadow-dispatcher"

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid = 0
_tid = 0  # the background thread's id (pthread), for its CPU clock


def background_loop() -> asyncio.AbstractEventLoop:
    """This process's background loop, started on first use; it runs until the process ends."""
    global _loop, _pid
    loop = _loop
    if loop is not None and _pid == os.getpid():
        return loop
    with _lock:
        if _loop is None or _pid != os.getpid():
            # A forked child inherits the parent's object but not its thread: start anew.
            _loop = asyncio.new_event_loop()
            _pid = os.getpid()
            thread = threading.Thread(target=_run, args=(_loop,), name=THREAD_NAME, daemon=True)
            thread.start()
        return _loop


def background_thread_id() -> int:
    """The running background thread's id in this process, 0 when none has started."""
    return _tid if _pid == os.getpid() else 0


def on_background_thread() -> bool:
    return threading.current_thread().name == THREAD_NAME and _pid == os.getpid()


def _run(loop: asyncio.AbstractEventLoop) -> None:
    global _tid
    _tid = threading.get_ident()
    _name_native_thread(b"shadow-dispatch")
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _name_native_thread(name: bytes) -> None:
    """Name the OS thread (Linux), so ``top -H`` and /proc show the dispatcher for what it is."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
