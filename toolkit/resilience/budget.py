"""RetryBudget: retries may be only a share of the calls made, so they cannot multiply the
load on a dependency that is already failing (Finagle's retry budget).

The budget counts calls and retries over a sliding window, not the retries in flight: a retry
costs the same whatever its backoff, so the default backoff (0.5 s doubling, plus up to 1 s
of jitter) does not shrink it, and a burst of failures in a quiet service is not refused
because the retries of the first few are still waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from toolkit._deprecated import keyword_only
from toolkit._duration import parse_seconds
from toolkit.errors import ConfigurationError

BUCKETS: Final = 10
"""Buckets per window: calls and retries leave the window in tenths."""


class RetryBudget:
    """Retries may be at most ``ratio`` of the calls of the last ``window``, plus ``minimum``
    a second.

    Each call (its first attempt) adds ``ratio`` of a retry to the budget, each retry takes one
    out, and both stop counting once they are older than ``window``. On top of that,
    ``minimum`` retries a second (``minimum * window`` at once) are always allowed, so a quiet
    service is never starved. With the defaults (20 %, 10 a second, 10 s) and a dependency
    that fails every call, a service making up to 12 calls a second retries each of them, and
    one making 1,000 calls a second makes about 210 retries a second, where ``attempts=3``
    alone would make 2,000. A retry granted but never attempted (cancelled during its
    backoff) is given back.

    One budget per decorated function by default (``@resilient``); share one between
    functions by passing the same object.

    Args:
        ratio: retries allowed per call, 0 to 1.
        minimum: retries a second always allowed, however few calls there are.
        window: seconds (or ``"10s"``) over which calls and retries count.
        clock: monotonic seconds (tests pass a fake).
    """

    __slots__ = ("_calls", "_clock", "_head", "_reserve", "_retries", "_width", "minimum", "ratio")

    @keyword_only("RetryBudget", "minimum", "window")
    def __init__(
        self,
        ratio: float = 0.2,
        *,
        minimum: float = 10,
        window: float | str = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise ConfigurationError(f"RetryBudget(ratio={ratio!r}): a share in [0, 1], e.g. 0.2")
        if (
            isinstance(minimum, bool)
            or not isinstance(minimum, int | float)
            or not 0 <= minimum < math.inf
        ):
            raise ConfigurationError(
                f"RetryBudget(minimum={minimum!r}): retries a second, 0 or more, e.g. 10"
            )
        try:
            seconds = parse_seconds(window)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"RetryBudget(window={window!r}): {exc}; e.g. '10s'") from exc
        if not 0 < seconds < math.inf:
            raise ConfigurationError(f"RetryBudget(window={window!r}): positive, e.g. '10s'")
        self.ratio = float(ratio)
        self.minimum = float(minimum)
        self._reserve = self.minimum * seconds
        self._width = seconds / BUCKETS
        self._clock = clock
        self._calls = [0] * BUCKETS
        self._retries = [0] * BUCKETS
        self._head = int(clock() / self._width)

    @property
    def window(self) -> float:
        """Seconds over which calls and retries count."""
        return self._width * BUCKETS

    @property
    def available(self) -> float:
        """Retries the budget would grant now."""
        self._bucket()
        return max(0.0, self.ratio * sum(self._calls) + self._reserve - sum(self._retries))

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, minimum={self.minimum}, window={self.window}; "
            f"{self.available:.1f} retries available)"
        )

    def record_call(self) -> None:
        """A call started: it adds ``ratio`` of a retry. (On every call: kept to a clock read
        and a list update.)"""
        now = int(self._clock() / self._width)
        if now != self._head:
            self._advance(now)
        self._calls[now % BUCKETS] += 1

    def try_retry(self) -> bool:
        """Take one retry if the budget has it."""
        bucket = self._bucket()
        if self.ratio * sum(self._calls) + self._reserve - sum(self._retries) < 1:
            return False
        self._retries[bucket] += 1
        return True

    def refund(self) -> None:
        """A retry taken with :meth:`try_retry` was never attempted."""
        bucket = self._bucket()
        if self._retries[bucket] > 0:  # taken in an older bucket: it leaves with it
            self._retries[bucket] -= 1

    def _bucket(self) -> int:
        """The current bucket's index, emptying the buckets that left the window."""
        now = int(self._clock() / self._width)
        if now != self._head:
            self._advance(now)
        return now % BUCKETS

    def _advance(self, now: int) -> None:
        """Empty the buckets between the last one used and ``now``, which becomes current."""
        head = self._head
        for passed in range(head + 1, head + 1 + min(now - head, BUCKETS)):
            self._calls[passed % BUCKETS] = self._retries[passed % BUCKETS] = 0
        self._head = now
