"""A channel followed in the background: the flag store, the cache store and the breaker
registry each keep one (``backend.follow`` in a task of their own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from toolkit.backends.protocols import PubSub

LIVE_TIMEOUT: Final = 2.0
"""Seconds :func:`start_following` waits at most for the first attempt to subscribe. A
backend bounds that attempt by its own timeout; this bounds one that does not."""


def _nothing() -> None:
    pass


async def start_following(
    backend: PubSub,
    channel: str,
    on_message: Callable[[str], Awaitable[None]],
    on_lost: Callable[[], None] = _nothing,
    *,
    name: str,
    wait: bool = True,
) -> asyncio.Task[None]:
    """``backend.follow(channel, on_message, on_lost)`` in a task named ``name``, returned
    once the subscription is live and its cue (the empty message it starts with) handled, so
    that whatever is published from then on reaches ``on_message``; or once the first attempt
    failed (``on_lost``), so that a backend that is down holds its caller no longer than its
    own timeout. With ``wait=False`` (the backend is known to be down), at once.

    Stop the task with :func:`toolkit._tasks.stop_tasks`."""
    ready = asyncio.get_running_loop().create_future()

    def signal() -> None:
        if not ready.done():
            ready.set_result(None)

    async def handle(message: str) -> None:
        try:
            await on_message(message)
        finally:
            signal()

    def lost() -> None:
        try:
            on_lost()
        finally:
            signal()

    task = asyncio.create_task(backend.follow(channel, handle, lost), name=name)
    if wait:
        await asyncio.wait((ready, task), timeout=LIVE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    return task
