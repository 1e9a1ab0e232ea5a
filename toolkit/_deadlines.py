"""The deadline of the current work: one absolute time in a context variable.

A request (the request-deadline middleware), a fan-out or the caller's own
``with toolkit.deadline(...)`` sets it; every toolkit timeout inside (``@resilient``, a fan-out
branch, a pool acquire, a deferred hand-off, an offloaded call, a cache's single-flight follower,
an embedding caller waiting for another's call) waits at most the smaller of its own timeout and
what is left (:func:`bounded`). Work that outlives its caller takes a deadline of its own
(:func:`own_deadline`). It is read, never enforced, here: the code that
waits enforces it, so a deadline costs nothing where nothing waits.

Times are ``time.monotonic()`` seconds (the event loop's default clock), so a worker thread
reads the same clock as the loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final, overload

from toolkit.errors import DeadlineExceeded

_DEADLINE: Final[ContextVar[float | None]] = ContextVar("toolkit_deadline", default=None)


def time_left() -> float | None:
    """Seconds left before the current deadline (0.0 once it passed), or None without one."""
    at = _DEADLINE.get()
    if at is None:
        return None
    return max(0.0, at - time.monotonic())


@overload
def bounded(timeout: float) -> float: ...
@overload
def bounded(timeout: None) -> float | None: ...
@overload
def bounded(timeout: float | None) -> float | None: ...


def bounded(timeout: float | None) -> float | None:
    """The smaller of ``timeout`` (None: none of its own) and the time left."""
    left = time_left()
    if left is None:
        return timeout
    if timeout is None:
        return left
    return min(timeout, left)


def expires_at() -> float | None:
    """The current deadline as a ``time.monotonic()`` time, or None."""
    return _DEADLINE.get()


@contextmanager
def deadline(seconds: float | None) -> Iterator[float | None]:
    """Give the work inside at most ``seconds`` (None: no new bound); an outer deadline that
    ends sooner still holds. Yields the seconds the work actually has.

    Example::

        with toolkit.deadline(3.0):
            answer = await agent_reply(question)   # every toolkit timeout inside fits in 3 s
    """
    if seconds is not None and seconds < 0:
        raise ValueError(f"deadline({seconds!r}): seconds >= 0, e.g. 3.0")
    outer = _DEADLINE.get()
    at = outer
    if seconds is not None:
        mine = time.monotonic() + seconds
        at = mine if outer is None else min(outer, mine)
    token = _DEADLINE.set(at)
    try:
        yield None if at is None else max(0.0, at - time.monotonic())
    finally:
        _DEADLINE.reset(token)


@contextmanager
def own_deadline(seconds: float) -> Iterator[None]:
    """Give the work inside a deadline of its own, ``seconds`` from now, in place of the
    current one: for work that outlives the caller that started it (a pool's build, which
    the next caller takes when this one has gone), so the caller's deadline must not cut it."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check() -> None:
    """Raise :class:`~toolkit.errors.DeadlineExceeded` when the current deadline has passed."""
    at = _DEADLINE.get()
    if at is not None and time.monotonic() >= at:
        raise DeadlineExceeded("the deadline of this work has passed")
