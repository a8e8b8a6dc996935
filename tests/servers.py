"""Start real uvicorn / gunicorn processes on 127.0.0.1 for tests, and talk HTTP to them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


@contextmanager
def server(
    kind: str, env: dict[str, str], *extra: str, workers: int = 2
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``kind``: "uvicorn" (FastAPI test app) or "gunicorn" (Flask test app, --preload)."""
    port = free_port()
    if kind == "uvicorn":
        cmd = [
            str(BIN / "uvicorn"),
            "tests.apps.asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
        ]
    else:
        cmd = [
            str(BIN / "gunicorn"),
            "tests.apps.wsgi_app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--preload",
            "--log-level",
            "warning",
            "--graceful-timeout",
            "10",
            *extra,
        ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    log = tempfile.NamedTemporaryFile(prefix=f"{kind}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_listening(port, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log:\n{Path(log.name).read_text()}") from None
        yield port, proc
    finally:
        log.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def read_spans(path: Path, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Wait until ``path`` holds at least ``count`` shadow spans."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            spans = [json.loads(line) for line in lines]
            spans = [s for s in spans if s["name"].startswith("shadow ")]
            if len(spans) >= count:
                return spans
        time.sleep(0.05)
    raise AssertionError(f"{len(spans)} shadow spans in {path}, expected {count}")
