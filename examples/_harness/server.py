"""An example's app in a uvicorn process of its own, started and stopped by ``with``."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Literal

import httpx

from examples._harness.metrics import Metrics
from examples._harness.modes import MODE_VARIABLE, STATUS_TOKEN_VARIABLE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN = "/_toolkit"  # the admin routes' default path
STATUS_USER = "demo"  # the name status_settings() gives the read-only token: the sign-in name


class Server:
    """``app`` (``module:attribute``) served by uvicorn on a free loopback port.

    Variables that configure the toolkit or OpenTelemetry (``TOOLKIT_*``, ``OTEL_*``) are not
    passed on: the app alone decides what each phase runs. ``mode`` sets ``EXAMPLE_MODE``
    (``examples._harness.after_mode()`` reads it), ``env`` adds variables of the example's own.
    The server gets a fresh read-only admin token, ``status_token``, in ``token_variable``: with
    the toolkit, ``status_settings()`` turns it into the status page's sign-in.
    """

    def __init__(
        self,
        app: str,
        *,
        mode: Literal["before", "after"] | None = None,
        env: Mapping[str, str] | None = None,
        port: int = 0,
        token_variable: str = STATUS_TOKEN_VARIABLE,
        ready_path: str = "/health",
    ) -> None:
        self.app = app
        self.mode = mode
        self.env = dict(env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status_url = f"{self.url}{ADMIN}/status"
        self.status_token = secrets.token_urlsafe(18)
        self.token_variable = token_variable
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "OTEL_"))}
        if self.mode is not None:
            env[MODE_VARIABLE] = self.mode
        env[self.token_variable] = self.status_token
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the server
        )
        try:
            self._wait_until_ready(timeout=30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn {self.app} exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.05)
        raise TimeoutError(f"uvicorn {self.app} did not answer on {self.url} within {timeout} s")

    def read_status(self, path: str) -> httpx.Response:
        """``GET`` an admin route (``/stats``, ``/status``) with the server's read-only token."""
        headers = {"Authorization": f"Bearer {self.status_token}"}
        return httpx.get(f"{self.url}{ADMIN}{path}", headers=headers, timeout=10)

    def metrics(self) -> Metrics:
        """The server's ``/metrics`` now (the toolkit's Prometheus endpoint)."""
        response = httpx.get(f"{self.url}/metrics", timeout=10).raise_for_status()
        return Metrics(f"{self.url}/metrics", response.text)

    def get_json(self, path: str) -> object:
        """``GET path`` as JSON (e.g. the ``/_demo/calls`` route of ``mount_call_counts``)."""
        return httpx.get(f"{self.url}{path}", timeout=10).raise_for_status().json()

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
