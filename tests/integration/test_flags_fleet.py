"""A flag flip reaches every worker process within a second, under uvicorn and gunicorn."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import RedisServer, UvicornServer, free_port, require_binary
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


async def ask_every_worker(base_url: str, workers: int) -> dict[int, dict[str, object]]:
    """One answer from each worker (new connections land on random workers)."""
    answers: dict[int, dict[str, object]] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:
        deadline = time.monotonic() + 20
        while len(answers) < workers and time.monotonic() < deadline:
            batch = await asyncio.gather(
                *(client.get(f"{base_url}/flags/{RATELIMIT}") for _ in range(16))
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
