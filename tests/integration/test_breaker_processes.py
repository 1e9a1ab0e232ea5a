"""The circuit breaker across real uvicorn processes on one real Redis: failures from every
process add up, every process follows a trip within a second, half-open lets exactly K probes
through for the whole fleet, and their success closes it everywhere; a process that starts
while the breaker is open follows it from its first call; a process without Redis decides
from local state. The app is tests/apps/breaker.py; its dependency is a Redis key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.servers import RedisServer, UvicornServer, free_port, wait_until
from tests.support.traffic import burst

pytestmark = [pytest.mark.slow, pytest.mark.timeout(40)]
logger = logging.getLogger(__name__)  # the timings: pytest --log-cli-level=INFO

PROCESSES = 4
MINIMUM_CALLS = 8
FAILURES_EACH = MINIMUM_CALLS // PROCESSES  # 2: below minimum_calls in every process
OPEN_SECONDS = 2.0
PROBES = 3
CALLERS_EACH = 12  # 48 concurrent callers in half-open
PROBE_SECONDS = 2.0  # the probes are slow, so every caller arrives while they are in flight
FOLLOW_SECONDS = 1.0  # the bound: every instance follows a transition within a second
PREFIX = "breaker-test"
CALLS_KEY, MODE_KEY, DELAY_KEY = f"{PREFIX}:calls", f"{PREFIX}:mode", f"{PREFIX}:delay"


def settings(backend_url: str, **extra: str) -> dict[str, str]:
    return {
        "TOOLKIT_BACKEND__URL": backend_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",  # this test is about coordination, not latency
        "TOOLKIT_RESILIENCE__MINIMUM_CALLS": str(MINIMUM_CALLS),
        "TOOLKIT_RESILIENCE__FAILURE_RATE": "0.5",
        "TOOLKIT_RESILIENCE__WINDOW": "60s",
        "TOOLKIT_RESILIENCE__OPEN_DURATION": f"{OPEN_SECONDS}s",
        "TOOLKIT_RESILIENCE__PROBES": str(PROBES),
        "KEY_PREFIX": PREFIX,
        **extra,
    }


@contextlib.contextmanager
def fleet(env: dict[str, str], processes: int = PROCESSES) -> Iterator[list[UvicornServer]]:
    """``processes`` servers of tests/apps/breaker.py, started side by side."""
    servers = [UvicornServer("tests.apps.breaker:app", env=env) for _ in range(processes)]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(processes) as pool:
        for server in servers:
            stack.push(server.__exit__)  # stops it even if it failed to become ready
        for started in [pool.submit(server.__enter__) for server in servers]:
            started.result()
        yield servers


def states(client: httpx.Client, servers: list[UvicornServer]) -> list[str]:
    """Each process's own view of the breaker (asking makes no call)."""
    return [client.get(f"{s.base_url}/breaker").json()["state"] for s in servers]


def seconds_until_all(
    client: httpx.Client, servers: list[UvicornServer], state: str, what: str
) -> float:
    """Seconds until every process reports ``state``; fails after FOLLOW_SECONDS."""
    started = time.monotonic()
    wait_until(lambda: set(states(client, servers)) == {state}, FOLLOW_SECONDS, what)
    return time.monotonic() - started


def test_4_processes_share_failures_follow_the_trip_and_let_k_probes_through_for_the_fleet(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Four processes, two failed calls each: none reaches minimum_calls (8) alone, together
    they trip the breaker, and the three that did not make the tripping call refuse within a
    second. After the open period, 48 concurrent callers spread over the four processes: 3
    probes reach the dependency for the whole fleet, 45 are refused without waiting for them;
    the probes succeed and every process is closed again within a second."""
    with (
        redis_server.client() as redis,
        fleet(settings(redis_url)) as servers,
        httpx.Client(timeout=5) as client,
    ):
        # 1. Failures from every process add up.
        redis.set(MODE_KEY, "fail")
        failed = []
        for server in servers:
            for _ in range(FAILURES_EACH):
                if len(failed) == MINIMUM_CALLS - 1:
                    # 7 failures so far, at most 2 in any process: closed everywhere.
                    assert states(client, servers) == ["closed"] * PROCESSES
                response = client.get(f"{server.base_url}/call")
                assert response.status_code == 502, response.text
                failed.append(response.json()["pid"])
        assert Counter(failed) == {pid: FAILURES_EACH for pid in set(failed)}
        assert len(set(failed)) == PROCESSES
        # The 8th failure tripped it (in the last process, before its answer was sent); the
        # others learn it from the announcement alone: no call is made meanwhile.
        follow_open = seconds_until_all(client, servers, "open", "every process following open")

        refusals = [client.get(f"{s.base_url}/call") for s in servers]
        assert [r.status_code for r in refusals] == [503] * PROCESSES
        assert {r.json()["outcome"] for r in refusals} == {"refused"}
        assert all(0 < r.json()["retry_after"] <= OPEN_SECONDS for r in refusals)
        assert int(redis.get(CALLS_KEY) or 0) == MINIMUM_CALLS  # the refused never called it
        half_open_at = time.monotonic() + max(r.json()["retry_after"] for r in refusals)

        # 2. Half-open probes are limited fleet-wide.
        redis.set(MODE_KEY, "ok")
        redis.set(DELAY_KEY, str(PROBE_SECONDS))
        time.sleep(max(0.0, half_open_at - time.monotonic()) + 0.1)
        urls = [f"{s.base_url}/call" for s in servers for _ in range(CALLERS_EACH)]
        started = time.monotonic()
        responses = asyncio.run(burst(urls, seconds=30))
        burst_seconds = time.monotonic() - started
        outcomes = Counter(r.json()["outcome"] for r in responses)
        assert outcomes == {"answered": PROBES, "refused": len(urls) - PROBES}
        assert int(redis.get(CALLS_KEY) or 0) == MINIMUM_CALLS + PROBES
        refused = [r.elapsed.total_seconds() for r in responses if r.status_code == 503]
        probed = [r.elapsed.total_seconds() for r in responses if r.status_code == 200]
        assert max(refused) < PROBE_SECONDS <= min(probed)  # refused fast, not after them

        # 3. The probes succeeded: closed, in every process.
        follow_closed = seconds_until_all(
            client, servers, "closed", "every process following closed"
        )
        redis.set(DELAY_KEY, "0")
        answers = [client.get(f"{s.base_url}/call") for s in servers]
        assert [r.json()["outcome"] for r in answers] == ["answered"] * PROCESSES
        assert int(redis.get(CALLS_KEY) or 0) == MINIMUM_CALLS + PROBES + PROCESSES

    logger.info(
        "every process followed open in %.0f ms and closed in %.0f ms; %d of %d callers probed "
        "(per process: %s), the others refused in at most %.0f ms; the burst took %.2f s",
        follow_open * 1000,
        follow_closed * 1000,
        outcomes["answered"],
        len(urls),
        sorted(Counter(r.json()["pid"] for r in responses if r.status_code == 200).values()),
        max(refused) * 1000,
        burst_seconds,
    )


def test_a_process_whose_redis_is_unreachable_serves_and_trips_on_local_counts(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A process started with nothing listening at its backend's address still answers
    through the breaker: the dependency's answers and failures reach the caller, never a
    backend error, and the breaker, deciding from local state, trips at minimum_calls (1
    success + 7 failures) and then refuses without calling the dependency. (Redis going away
    and coming back under a running breaker is tests/unit/test_resilience.py's.)"""
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    env = settings(unreachable, TOOLKIT_BACKEND__TIMEOUT="0.2s", DEPENDENCY_URL=redis_url)
    with (
        redis_server.client() as redis,
        fleet(env, processes=1) as (server,),
        httpx.Client(timeout=5) as client,
    ):
        url = f"{server.base_url}/call"
        assert client.get(url).json()["outcome"] == "answered"
        redis.set(MODE_KEY, "fail")
        outcomes = []
        for _ in range(MINIMUM_CALLS + 1):
            outcomes.append(client.get(url).json()["outcome"])
            if outcomes[-1] != "failed":
                break
        assert outcomes == ["failed"] * (MINIMUM_CALLS - 1) + ["refused"]
        assert int(redis.get(CALLS_KEY) or 0) == MINIMUM_CALLS  # the refused one never called
        view = client.get(f"{server.base_url}/breaker").json()
        assert view["state"] == "open"
        assert view["degraded"] is True


def test_a_process_that_first_needs_the_breaker_while_it_is_open_follows_from_its_first_call(
    redis_server: RedisServer, redis_url: str
) -> None:
    """One process trips the breaker while two others have not used it yet (they restarted,
    or serve another model until now), so the announcement found no breaker there: the first
    call of one is refused, not sent to the dependency; after the open period, 12 concurrent
    first calls to the other let exactly the 3 probes through."""
    with (
        redis_server.client() as redis,
        fleet(settings(redis_url), processes=3) as (first, *late),
        httpx.Client(timeout=5) as client,
    ):
        redis.set(MODE_KEY, "fail")
        for _ in range(MINIMUM_CALLS):
            assert client.get(f"{first.base_url}/call").json()["outcome"] == "failed"
        assert states(client, [first, *late]) == ["open", "unused", "unused"]
        refused = client.get(f"{late[0].base_url}/call")
        assert refused.json()["outcome"] == "refused", refused.text
        assert int(redis.get(CALLS_KEY) or 0) == MINIMUM_CALLS
        half_open_at = time.monotonic() + refused.json()["retry_after"]

        redis.set(MODE_KEY, "ok")
        redis.set(DELAY_KEY, str(PROBE_SECONDS))
        time.sleep(max(0.0, half_open_at - time.monotonic()) + 0.1)
        assert states(client, late[1:]) == ["unused"]
        responses = asyncio.run(burst([f"{late[1].base_url}/call"] * CALLERS_EACH, seconds=30))
        outcomes = Counter(r.json()["outcome"] for r in responses)
        assert outcomes == {"answered": PROBES, "refused": CALLERS_EACH - PROBES}
        assert int(redis.get(CALLS_KEY) or 0) == MINIMUM_CALLS + PROBES
