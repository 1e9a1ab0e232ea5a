"""Durable deferred work across real processes: an app (uvicorn) defers, worker processes
(``agent-toolkit worker``) run, one is killed mid-task, Redis restarts.

The guarantee under test is the documented one: at least once. A task whose worker was
killed mid-run runs again on another worker and completes once; it started twice. Without
failures each task runs exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from tests.support.servers import ROOT, RedisServer, UvicornServer, require_binary, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

HEARTBEAT = 1.0
SWEEP = 1.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of these tests' own, since one of them restarts it."""
    server = RedisServer(require_binary("redis-server"))
    server.start()
    yield server
    server.stop()


def environment(server: RedisServer) -> dict[str, str]:
    return {
        "TOOLKIT_DEFER__DURABLE__ENABLED": "true",
        "TOOLKIT_DEFER__DURABLE__URL": server.url,
        "TOOLKIT_DEFER__DURABLE__HEARTBEAT": f"{HEARTBEAT}s",
        "TOOLKIT_DEFER__DURABLE__SWEEP_INTERVAL": f"{SWEEP}s",
        "TOOLKIT_DEFER__DURABLE__HANDOFF_TIMEOUT": "300ms",
        "TOOLKIT_DEFER__JOURNAL": "",
    }


@contextmanager
def worker(server: RedisServer, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``agent-toolkit worker tests.apps.durable`` in a process of its own."""
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "worker", "tests.apps.durable"],
        env={**os.environ, **environment(server), **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def pids(client: redis.Redis, key: str) -> list[int]:
    return [int(pid) for pid in client.lrange(key, 0, -1)]


def ready_workers(client: redis.Redis) -> int:
    """Workers of the queue that announced themselves (SAQ's worker info, written at start)."""
    return len(client.keys("saq:toolkit-deferred:worker_info:*"))


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    wait_until(condition, seconds, what)


def defer(app: UvicornServer, token: str, seconds: float = 0.0) -> httpx.Response:
    return httpx.post(f"{app.base_url}/defer/{token}", params={"seconds": seconds}, timeout=5)


def test_durable_task_deferred_by_the_app_runs_in_a_worker_process(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    with (
        UvicornServer("tests.apps.durable:app", env=environment(redis_server)) as app,
        worker(redis_server) as running,
    ):
        answer = defer(app, "one")
        assert answer.status_code == 200, answer.text
        until(lambda: pids(client, "done:one") == [running.pid], 20, "the worker ran the task")
        assert answer.json()["pid"] != running.pid


def test_idle_worker_process_exits_soon_after_sigterm_with_the_default_grace(
    redis_server: RedisServer,
) -> None:
    """Nothing running: SIGTERM ends the process in well under its 10 s grace."""
    client = redis_server.client()
    with worker(redis_server, TOOLKIT_DEFER__GRACE="10s") as idle:
        until(lambda: ready_workers(client) == 1, 30, "the worker up")
        signalled = time.monotonic()
        idle.send_signal(signal.SIGTERM)
        assert idle.wait(15) == 0
        assert time.monotonic() - signalled < 3.0


def test_durable_task_of_a_worker_killed_mid_task_completes_on_another(
    redis_server: RedisServer,
) -> None:
    """SIGKILL while the task runs: the other worker runs it again once its heartbeat is
    stale, and it completes once (it started twice: at least once, as documented)."""
    client = redis_server.client()
    with (
        UvicornServer("tests.apps.durable:app", env=environment(redis_server)) as app,
        worker(redis_server) as one,
        worker(redis_server) as other,
    ):
        workers = {one.pid: one, other.pid: other}
        until(lambda: ready_workers(client) == 2, 30, "both workers up")
        assert defer(app, "killed", seconds=3).status_code == 200
        until(lambda: len(pids(client, "runs:killed")) == 1, 20, "a worker started it")
        [started] = pids(client, "runs:killed")
        [survivor] = set(workers) - {started}
        os.kill(started, signal.SIGKILL)
        workers[started].wait(5)
        killed_at = time.monotonic()
        until(lambda: pids(client, "done:killed") == [survivor], 30, "it completed")
        assert pids(client, "runs:killed") == [started, survivor]
        # Run again within heartbeat + sweep + the sweep's abort wait, then ran its 3 s.
        assert time.monotonic() - killed_at < HEARTBEAT + SWEEP + 2 + 3 + 3


def test_durable_tasks_without_failures_run_exactly_once_across_workers(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    tokens = [f"t{n}" for n in range(30)]
    with (
        UvicornServer("tests.apps.durable:app", env=environment(redis_server)) as app,
        worker(redis_server) as first,
        worker(redis_server) as second,
    ):
        until(lambda: ready_workers(client) == 2, 30, "both workers up")
        for token in tokens:
            assert defer(app, token, seconds=0.05).status_code == 200
        until(lambda: all(client.llen(f"done:{token}") for token in tokens), 40, "all tasks done")
        time.sleep(2 * (HEARTBEAT + SWEEP))  # time for a wrong redelivery to show
        runs = {token: pids(client, f"runs:{token}") for token in tokens}
        assert all(len(ran) == 1 for ran in runs.values()), runs
        assert {pid for ran in runs.values() for pid in ran} <= {first.pid, second.pid}


def test_durable_app_survives_a_redis_restart(redis_server: RedisServer) -> None:
    """Redis stops: a hand-off is refused with 503 at once, the rest of the app answers;
    Redis comes back: hand-offs and the worker go on by themselves."""
    with (
        UvicornServer("tests.apps.durable:app", env=environment(redis_server)) as app,
        worker(redis_server) as running,
    ):
        assert defer(app, "before").status_code == 200
        client = redis_server.client()
        until(lambda: pids(client, "done:before") == [running.pid], 20, "ran before")
        redis_server.stop()
        started = time.monotonic()
        refused = defer(app, "down")
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert time.monotonic() - started < 3
        assert httpx.get(f"{app.base_url}/health", timeout=5).status_code == 200
        redis_server.start()
        until(lambda: defer(app, "after").status_code == 200, 20, "hand-offs work again")
        client = redis_server.client()
        until(lambda: client.llen("done:after") >= 1, 30, "the worker ran it after the restart")
        assert running.poll() is None
