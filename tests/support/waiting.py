"""Waiting for something to become true, without sleeping longer than needed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(condition: Callable[[], bool], seconds: float = 2.0) -> float:
    """Seconds until ``condition`` held; fails the test after ``seconds``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not true within {seconds} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def eventually_returns(
    attempt: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    seconds: float = 2.0,
    *,
    failing: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> T:
    """The first result of ``attempt()`` that ``accept`` takes, trying every 10 ms; an
    exception of ``failing`` counts as not yet. Fails the test after ``seconds``."""
    started = time.monotonic()
    while True:
        try:
            result = await attempt()
        except failing:
            pass
        else:
            if accept(result):
                return result
        if time.monotonic() - started > seconds:
            raise AssertionError(f"no accepted result within {seconds} s")
        await asyncio.sleep(0.01)
