"""Real servers for tests: redis-server and uvicorn processes on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(name: str) -> str:
    """Path of ``name``; a missing binary fails the test when CI is set, else skips it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it from the system packages)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so this fails instead of skipping")
        pytest.skip(f"{message}; with CI set this would fail")
    return path


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except (httpx.HTTPError, redis.RedisError, OSError):
            pass  # not up yet
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


class RedisServer:
    """A redis-server process, no persistence, that tests may stop, restart and pause."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="toolkit-redis-")

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, f"redis-server on port {self.port} answering")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def ping(self) -> bool:
        return bool(self.client().ping())

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def pause(self, seconds: float) -> None:
        """Redis stops answering clients for ``seconds`` (a stall, not a crash)."""
        with self.client() as client:
            client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


class UvicornServer:
    """``uvicorn <app>`` in its own process (``workers`` > 1: uvicorn's multiprocess mode);
    ``args`` are more uvicorn options (``["--root-path", "/api"]``); ``output`` a file that
    gets the process's stdout and stderr (its log lines), else they are the test's."""

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        ready_path: str = "/health",
        args: Sequence[str] = (),
        output: Path | None = None,
    ) -> None:
        self.app = app
        self.output = output
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
        self.workers = workers
        self.ready_path = ready_path
        self.args = list(args)
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
            "--log-level", "warning", *self.args,
        ]  # fmt: skip

    def __enter__(self) -> UvicornServer:
        log = None if self.output is None else self.output.open("wb")
        try:
            self._process = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
            )
        finally:
            if log is not None:
                log.close()  # the process has its own copy
        wait_until(self._ready, 30, f"uvicorn {self.app} answering on {self.base_url}")
        if self.workers > 1:
            # The first worker up answers alone until the others have imported the app; a
            # test that starts then exercises one process, not the fleet.
            wait_until(self._every_worker_ready, 30, f"all {self.workers} workers answering")
        return self

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"uvicorn {self.app} exited with {self._process.returncode}")
        return httpx.get(self.base_url + self.ready_path, timeout=1).status_code == 200

    def _every_worker_ready(self, seen: set[int] | None = None) -> bool:
        """Fresh connections land on random workers: enough of them reach every one. The
        ready path of a multi-worker app answers with its ``worker`` (the process id)."""
        seen = set() if seen is None else seen
        seen.clear()
        for _ in range(8 * self.workers):
            with httpx.Client(timeout=1) as client:
                seen.add(client.get(self.base_url + self.ready_path).json()["worker"])
            if len(seen) == self.workers:
                return True
        return False

    def worker_pids(self) -> set[int]:
        """The worker processes answering now (each fresh connection lands on a random one)."""
        pids: set[int] = set()
        wait_until(
            lambda: self._every_worker_ready(pids), 30, f"all {self.workers} workers answering"
        )
        return pids

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(5)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server's processes, as a crash or the OOM killer would: no shutdown,
        no lifespan, nothing flushed."""
        if self._process is None:
            return
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(5)
        self._process = None


class GunicornServer(UvicornServer):
    """``gunicorn -k uvicorn_worker.UvicornWorker -w <workers> <app>``: the arbiter forks the
    workers (``args`` are more gunicorn options)."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", self.app, "-k", "uvicorn_worker.UvicornWorker",
            "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}", "--log-level", "warning",
            *self.args,
        ]  # fmt: skip
