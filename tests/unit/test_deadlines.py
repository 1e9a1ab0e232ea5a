"""Every toolkit timeout respects the current deadline: ``@resilient``'s, a pool acquire's;
each waits the smaller of its own and what is left, and raises ``DeadlineExceeded`` when the
deadline is what cut it. And the ``deadline`` settings section's checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import toolkit
from tests.support.waiting import eventually
from toolkit.errors import ConfigurationError
from toolkit.resilience import BreakerRegistry, set_current_breakers

pytestmark = pytest.mark.anyio


async def slow_call() -> str:
    await asyncio.sleep(5)
    return "never"


# --- @resilient --------------------------------------------------------------------------------


async def test_a_resilient_timeout_under_a_shorter_deadline_ends_at_the_deadline() -> None:
    call = toolkit.resilient(timeout="5s")(slow_call)
    started = time.monotonic()
    with toolkit.deadline(0.2), pytest.raises(toolkit.DeadlineExceeded):
        await call()
    assert 0.19 < time.monotonic() - started < 1.0


async def test_a_resilient_timeout_shorter_than_the_deadline_is_its_own_timeout_error() -> None:
    call = toolkit.resilient(timeout="100ms")(slow_call)
    started = time.monotonic()
    with toolkit.deadline(5), pytest.raises(TimeoutError) as raised:
        await call()
    assert not isinstance(raised.value, toolkit.DeadlineExceeded)
    assert time.monotonic() - started < 1.0


async def test_a_resilient_call_without_a_timeout_of_its_own_still_fits_the_deadline() -> None:
    call = toolkit.resilient(timeout=None)(slow_call)
    started = time.monotonic()
    with toolkit.deadline(0.1), pytest.raises(toolkit.DeadlineExceeded):
        await call()
    assert time.monotonic() - started < 1.0


async def test_a_resilient_call_with_no_time_left_is_not_made_and_its_fallback_answers() -> None:
    made: list[int] = []

    async def canned() -> str:
        return "canned"

    @toolkit.resilient(timeout="5s", fallback=canned)
    async def call() -> str:
        made.append(1)
        return "made"

    @toolkit.resilient(timeout="5s")
    async def bare() -> str:
        made.append(1)
        return "made"

    with toolkit.deadline(0.001):
        await asyncio.sleep(0.01)
        assert await call() == "canned"
        with pytest.raises(toolkit.DeadlineExceeded, match="no time left"):
            await bare()
    assert made == []


async def test_the_retries_of_a_resilient_call_share_the_deadline() -> None:
    attempts: list[float | None] = []

    async def no_wait(seconds: float) -> None:
        del seconds

    @toolkit.resilient(
        timeout="5s",
        retries=toolkit.RetryPolicy(
            on=ConnectionError,
            attempts=50,
            wait_initial=0,
            wait_max=0,
            wait_jitter=0,
            sleep=no_wait,
        ),
        budget=None,
    )
    async def flaky() -> None:
        attempts.append(toolkit.time_left())
        await asyncio.sleep(0.04)
        raise ConnectionError("down")

    started = time.monotonic()
    # The deadline cuts an attempt, or leaves no time for the next: the last error then.
    with toolkit.deadline(0.2), pytest.raises((TimeoutError, ConnectionError)):
        await flaky()
    assert time.monotonic() - started < 1.0
    assert 2 <= len(attempts) <= 6  # not 50: the deadline ends them


async def test_a_call_cut_by_the_deadline_is_no_failure_of_its_breaker() -> None:
    """It had less time than its own timeout: the dependency was not shown to be slow."""
    registry = BreakerRegistry()
    set_current_breakers(registry)
    breaker = registry.get("store", minimum_calls=1, failure_rate=0.5)
    call = toolkit.resilient(timeout="5s", breaker="store")(slow_call)
    for _ in range(3):
        with toolkit.deadline(0.02), pytest.raises(toolkit.DeadlineExceeded):
            await call()
    assert breaker.state == "closed"
    own = toolkit.resilient(timeout="20ms", breaker="store")(slow_call)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await own()
    await asyncio.sleep(0.05)  # the failure of a cut call is recorded in the background
    assert breaker.state == "open"  # its own timeout: a failure


async def test_the_resilience_flag_off_leaves_the_call_bare_under_a_deadline() -> None:
    call = toolkit.resilient(timeout="5s")(toolkit.resilient(timeout=None)(slow_call))
    with toolkit.flags.override({toolkit.flags.RESILIENCE: "off"}), toolkit.deadline(0.05):
        task = asyncio.create_task(call())
        await asyncio.sleep(0.1)
        assert not task.done()  # nothing cut it
        task.cancel()


# --- pool acquires -------------------------------------------------------------------------------


async def test_a_pool_acquire_under_a_shorter_deadline_ends_at_it_with_deadline_exceeded() -> None:
    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(list, size=1, acquire_timeout="5s")
    async with pool.acquire():
        started = time.monotonic()
        with toolkit.deadline(0.1), pytest.raises(toolkit.DeadlineExceeded):
            async with pool.acquire():
                pass
        assert 0.09 < time.monotonic() - started < 1.0
        short: toolkit.AgentPool[list[str]] = toolkit.AgentPool(
            list, size=1, acquire_timeout="50ms"
        )
        async with short.acquire():
            with toolkit.deadline(5), pytest.raises(toolkit.PoolTimeoutError):  # its own: 503
                await short.acquire().__aenter__()
        await short.close()
    async with pool.acquire():  # the permit went back
        pass
    await pool.close()


async def test_a_pool_acquire_with_no_time_left_does_not_wait() -> None:
    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(list, size=1, acquire_timeout="5s")
    async with pool.acquire():
        with toolkit.deadline(0.001):
            await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(toolkit.DeadlineExceeded, match="no time left"):
                async with pool.acquire():
                    pass
            assert time.monotonic() - started < 0.05
    assert pool.stats().used == 0
    await pool.close()


async def test_a_pool_acquire_with_an_object_idle_lends_it_whatever_the_deadline() -> None:
    """The fast path never waits, so a deadline has nothing to bound."""
    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(list, size=1, acquire_timeout="5s")
    async with pool.acquire():
        pass
    with toolkit.deadline(0.001):
        await asyncio.sleep(0.01)
        async with pool.acquire() as lent:
            assert lent == []
    await pool.close()


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
@pytest.mark.parametrize(
    ("create_timeout", "budget", "error"),
    [(10.0, 0.2, toolkit.DeadlineExceeded), (0.2, 10.0, toolkit.PoolTimeoutError)],
    ids=["deadline", "create_timeout"],
)
async def test_waiting_for_a_pool_build_ends_at_the_smaller_of_create_timeout_and_the_deadline(
    mode: str, create_timeout: float, budget: float, error: type[Exception]
) -> None:
    """The caller stops waiting at the sooner of the two (DeadlineExceeded when the deadline
    cut it); the build has ``create_timeout`` as its own deadline, not its caller's, and lands
    for the next caller when that leaves it the time."""
    seen: list[float | None] = []
    release = asyncio.Event()

    async def make() -> list[str]:
        seen.append(toolkit.time_left())
        await release.wait()
        return []

    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(
        make, mode=mode, acquire_timeout="30s", create_timeout=create_timeout
    )
    started = time.monotonic()
    with toolkit.deadline(budget), pytest.raises(error) as raised:
        async with pool.acquire():
            pass
    assert 0.15 < time.monotonic() - started < 2.0
    if error is toolkit.PoolTimeoutError:  # the pool's own setting, named (a 503, not a 504)
        assert raised.value.setting == "create_timeout"
        assert f"pool {pool.name!r}" in str(raised.value)
        assert "create_timeout=0.2s" in str(raised.value)
    (left,) = seen
    assert left is not None
    assert create_timeout - 0.5 < left <= create_timeout
    release.set()
    if create_timeout > budget:  # the build went on without its caller and lands idle
        await eventually(lambda: pool.stats().idle == 1)
        async with pool.acquire() as lent:
            assert lent == []
    await pool.close()


# --- the deadline section ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"default": "0"}, r"DEADLINE__DEFAULT '0': must be at least 1ms \(example: 10s"),
        ({"default": "-1s"}, "DEADLINE__DEFAULT"),
        ({"default": "2 days"}, "DEADLINE__DEFAULT"),
        ({"max": "1000000d"}, r"DEADLINE__MAX .*at most 1d"),
        ({"routes": {"chat": "1s"}}, "must start with '/'"),
        ({"routes": {"/chat": "0"}}, r"DEADLINE__ROUTES \(entry /chat.budget\)"),
        ({"routes": {"/chat": {"budgte": "1s"}}}, "budgte"),
        ({"header": "bad header"}, "not a header name"),
        ({"maximum": "1s"}, "MAXIMUM.*did you mean TOOLKIT_DEADLINE__MAX"),
    ],
)
def test_bad_deadline_settings_fail_at_startup_naming_the_setting(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        toolkit.ToolkitSettings(deadline=values)


def test_a_route_budget_is_a_duration_or_null() -> None:
    settings = toolkit.ToolkitSettings(
        deadline={"routes": {"/chat/{session}": "8s", "/stream/*": None, "/x": {"budget": 1}}}
    )
    budgets = {path: route.budget for path, route in settings.deadline.routes.items()}
    assert budgets == {"/chat/{session}": 8.0, "/stream/*": None, "/x": 1.0}
    assert settings.deadline.header == "request-timeout"
