"""A flag flip reaches every worker process within a second, under uvicorn and gunicorn."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import (
    RedisServer,
    UvicornServer,
    free_port,
    require_binary,
    wait_until,
)
from toolkit.backends.redis import RedisBackend
from toolkit.flags import RATELIMIT, FlagStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKERS = 4


class GunicornServer(UvicornServer):
    """``gunicorn --preload`` with uvicorn workers: the app is imported before the fork."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            self.app,
            "--preload",
            "--workers",
            str(self.workers),
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
        ]


def env(redis_url: str) -> dict[str, str]:
    # A long resync interval: what arrives within a second arrived by pub/sub.
    return {"TOOLKIT_BACKEND__URL": redis_url, "TOOLKIT_FLAGS__RESYNC_INTERVAL": "60"}


async def ask_every_worker(
    base_url: str, workers: int, key: str = RATELIMIT
) -> dict[int, dict[str, object]]:
    """One answer about flag ``key`` from each worker (new connections land on random
    workers)."""
    answers: dict[int, dict[str, object]] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:
        deadline = time.monotonic() + 20
        while len(answers) < workers and time.monotonic() < deadline:
            batch = await asyncio.gather(
                *(client.get(f"{base_url}/flags/{key}") for _ in range(16))
            )
            for response in batch:
                body = response.json()
                answers.setdefault(body["worker"], body)
    assert len(answers) == workers, f"reached {len(answers)} of {workers} workers"
    return answers


@pytest.fixture(params=["uvicorn --workers", "gunicorn --preload"])
def server(request: pytest.FixtureRequest, redis_url: str) -> Iterator[UvicornServer]:
    kind = UvicornServer if request.param.startswith("uvicorn") else GunicornServer
    with kind("tests.apps.agent:app", env=env(redis_url), workers=WORKERS) as running:
        yield running


def test_a_flip_reaches_every_worker_within_a_second(server: UvicornServer, redis_url: str) -> None:
    async def scenario() -> tuple[float, dict[int, dict[str, object]]]:
        before = await ask_every_worker(server.base_url, WORKERS)
        assert {a["variant"] for a in before.values()} == {"on"}
        backend = RedisBackend(redis_url, timeout=1)
        flipped = time.time()
        await FlagStore(backend).set(RATELIMIT, "off", by="test")
        await backend.close()
        await asyncio.sleep(1.0)
        return flipped, await ask_every_worker(server.base_url, WORKERS)

    flipped, after = asyncio.run(scenario())
    assert {a["variant"] for a in after.values()} == {"off"}
    # Each worker stamps the reload that brought the change: every one within a second.
    delays = sorted(float(a["loaded_at"]) - flipped for a in after.values())  # type: ignore[arg-type]
    assert all(0 <= d < 1.0 for d in delays), delays


def test_one_request_keeps_one_value_while_the_flag_flips(redis_url: str) -> None:
    with UvicornServer("tests.apps.agent:app", env=env(redis_url)) as running:

        async def scenario() -> dict[str, object]:
            async with httpx.AsyncClient(timeout=5) as client:
                slow = asyncio.create_task(
                    client.get(f"{running.base_url}/flags/{RATELIMIT}?hold=0.5")
                )
                await asyncio.sleep(0.2)
                backend = RedisBackend(redis_url, timeout=1)
                await FlagStore(backend).set(RATELIMIT, "off", by="test")
                await backend.close()
                answer = (await slow).json()
                after = (await client.get(f"{running.base_url}/flags/{RATELIMIT}")).json()
                assert after["variant"] == "off"
                return answer

        answer = asyncio.run(scenario())
    assert (answer["variant"], answer["again"]) == ("on", "on")


def test_startup_does_not_wait_for_a_dead_backend() -> None:
    """Redis unreachable: the app starts and serves at once, flags at their defaults, stale;
    when Redis appears, the workers go live by themselves."""
    redis = RedisServer(require_binary("redis-server"), port=free_port())
    started = time.monotonic()
    with UvicornServer("tests.apps.agent:app", env=env(redis.url)) as running:
        assert time.monotonic() - started < 10
        answer = httpx.get(f"{running.base_url}/flags/{RATELIMIT}", timeout=2).json()
        assert (answer["variant"], answer["reason"], answer["stale"]) == ("on", "stale", True)
        redis.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = httpx.get(f"{running.base_url}/flags/{RATELIMIT}", timeout=2).json()
            if not answer["stale"]:
                break
            time.sleep(0.1)
        assert answer["reason"] == "default"
    redis.stop()


APP_FLAG = "app.feature"


def run_cli(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TOOLKIT_BACKEND__URL": redis_url},
    )


def test_after_redis_restarts_empty_the_fleet_declares_its_flags_again_within_a_second() -> None:
    """Redis restarts with nothing in it: each worker declares its application flags again
    and serves live flags within a second of Redis answering, so an operator can set them
    at once (before, `flags set app.feature on` answered "no flag" until the apps
    restarted)."""
    redis = RedisServer(require_binary("redis-server"))
    redis.start()
    declared = json.dumps({APP_FLAG: {"description": "A feature of the app."}})
    app_env = {**env(redis.url), "TOOLKIT_FLAGS__DECLARE": declared}
    try:
        with UvicornServer("tests.apps.agent:app", env=app_env, workers=2) as running:

            def answers() -> list[dict[str, object]]:
                return list(asyncio.run(ask_every_worker(running.base_url, 2, APP_FLAG)).values())

            assert run_cli("flags", "get", APP_FLAG, redis_url=redis.url).returncode == 0
            redis.stop()
            wait_until(lambda: all(a["stale"] for a in answers()), 20, "every worker stale")
            # A 3 s outage, long enough for every retry to back off to its longest delay;
            # the workers keep answering meanwhile, with the last known values.
            outage_ends = time.monotonic() + 3
            while time.monotonic() < outage_ends:
                assert {(a["variant"], a["reason"]) for a in answers()} == {("off", "stale")}
            redis.start()  # empty; returns once it answers
            back = time.time()
            wait_until(lambda: not any(a["stale"] for a in answers()), 20, "every worker live")
            # Each worker stamps the reload that made it live, made after it declared its
            # flags again.
            delays = sorted(float(a["loaded_at"]) - back for a in answers())  # type: ignore[arg-type]
            assert all(d < 1.0 for d in delays), delays

            changed = run_cli("flags", "set", APP_FLAG, "on", redis_url=redis.url)
            assert changed.returncode == 0, changed.stdout + changed.stderr
            wait_until(lambda: {a["variant"] for a in answers()} == {"on"}, 10, "flag on")
    finally:
        redis.stop()
