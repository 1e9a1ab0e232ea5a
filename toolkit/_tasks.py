"""Background tasks the toolkit owns: stopped within a bound, even when a driver swallowed
their cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Final, TypeVar

T = TypeVar("T")

STOP_TIMEOUT: Final = 2.0
"""Seconds :func:`stop_tasks` waits for tasks to end; shutdown must never hang on them."""


def spawn(tasks: set[asyncio.Task[Any]], work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``work`` in a task held in ``tasks`` until it is done: the event loop keeps only a
    weak reference to a task, and ``tasks`` is what :func:`stop_tasks` or a settle waits for."""
    task = asyncio.get_running_loop().create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def raise_if_cancelling() -> None:
    """Honour a cancellation that a driver swallowed during the last await (redis-py may turn
    one into a connection error): the task is still being cancelled, so stop here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], within: float = STOP_TIMEOUT) -> None:
    """Cancel ``tasks`` and wait for them, at most ``within`` seconds. A task that ignored
    its cancellation (a driver swallowed it mid-call) is cancelled again, every 0.2 s."""
    deadline = time.monotonic() + within
    pending = [task for task in tasks if not task.done()]
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        pending = [task for task in pending if not task.done()]
