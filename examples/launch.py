"""Start an example's two real server processes (production app + candidate) on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLES = ("fastapi", "flask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy on port {self.port}; see {self.log}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: the shadow engine flushes), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode or 0)


def _command(example: str, role: str, port: int, module: str | None) -> list[str]:
    module = module or f"examples.{example}_app.{'app' if role == 'production' else 'candidate'}:app"
    if example == "fastapi":
        return [
            str(BIN / "uvicorn"),
            module,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    workers = "2" if role == "production" else "1"
    return [
        str(BIN / "gunicorn"),
        module,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        workers,
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--preload",
        "--graceful-timeout",
        "15",
        "--log-level",
        "warning",
    ]


def start(
    example: str,
    role: str,
    env: dict[str, str],
    log_dir: Path,
    port: int | None = None,
    wrap: list[str] | None = None,
    module: str | None = None,
) -> Process:
    """Start ``role`` ("production" or "candidate") of ``example`` ("fastapi" or "flask").

    ``wrap`` prefixes the command (the benchmark pins servers to a core with ``taskset``);
    ``module`` serves another ``module:app`` with the same server settings.
    """
    if example not in EXAMPLES:
        raise ValueError(f"example: must be one of {EXAMPLES}, got {example!r}")
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{example}-{role}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*(wrap or []), *_command(example, role, port, module)],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Process(f"{example} {role}", port, proc, log)
