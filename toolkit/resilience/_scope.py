"""What the coroutine and stream paths of ``@resilient`` share about the deadline scope of a
call: the seconds it has left, and what its breaker makes of a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from toolkit.resilience._nesting import claimed_by
from toolkit.resilience.breaker import CircuitBreaker, Permit


def remaining(scope: asyncio.Timeout | None) -> Callable[[], float | None]:
    """Seconds left before ``scope`` expires, asked at each retry; None for no scope."""
    if scope is None:
        return _none

    def left() -> float | None:
        when = scope.when()
        return None if when is None else when - asyncio.get_running_loop().time()

    return left


def _none() -> float | None:
    return None


def record_cut(
    breaker: CircuitBreaker,
    permit: Permit,
    cancel: asyncio.CancelledError,
    scope: asyncio.Timeout | None,
    seconds: float,
    *,
    own: bool,
) -> None:
    """A call was cancelled after ``seconds``: a failure if its own deadline cut it (the
    dependency was too slow; ``own``: ``scope`` is its own timeout, not the shorter deadline
    of the current work, which gave it less time than its own), else neither failure nor
    success."""
    if own and scope is not None and scope.expired() and claimed_by(cancel) is None:
        # Our own deadline cut it, and not inside another breaker's call (which claimed the
        # cancellation as it passed).
        breaker._spawn(breaker.record_failure(permit, TimeoutError(), seconds))
    else:
        breaker.record_cancelled(permit)
