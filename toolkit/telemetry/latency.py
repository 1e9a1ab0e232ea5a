"""Recent latencies per key, kept in process: percentiles, throughput and error rate over a
sliding window, for the status page. Independent of sampling and of any meter provider.

Each key has a ring of time slices covering the window; a slice counts its calls, errors and
durations in logarithmic buckets (a value's bucket is ``ceil(log(seconds) / log(GAMMA))``), so
a percentile read from the merged buckets is within 1 % of the true one, whatever the spread,
and a record is a logarithm and a few dict updates. Memory per key is bounded by the slices
and the buckets a window can fill (about 1,000 from a microsecond to an hour); keys are
bounded too: past ``max_keys``, new ones are counted under one ``other`` key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

GAMMA: Final = 1.02
"""Ratio of one bucket's upper bound to the last's: percentiles within (GAMMA-1)/(GAMMA+1)."""
SLICES: Final = 10
"""Slices per window: the window slides by a tenth of itself."""
_LOG_GAMMA: Final = math.log(GAMMA)
_SMALLEST: Final = 1e-6
"""Durations up to a microsecond share the lowest bucket."""
_LOWEST: Final = math.ceil(math.log(_SMALLEST) / _LOG_GAMMA)


@dataclass(frozen=True, slots=True)
class Summary:
    """One key over the window: ``count`` calls, ``errors`` among them, per second over the
    ``seconds`` the window covers so far; percentiles and the longest call in seconds (None
    with no calls); the tokens and cost its calls reported (GenAI operations)."""

    count: int
    errors: int
    seconds: float
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    @property
    def throughput(self) -> float:
        """Calls per second."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """Share of calls that failed, 0 to 1."""
        return self.errors / self.count if self.count else 0.0


class _Slice:
    __slots__ = (
        "buckets",
        "cost",
        "count",
        "errors",
        "input_tokens",
        "longest",
        "number",
        "output_tokens",
    )

    def __init__(self, number: int) -> None:
        self.number = number
        self.count = 0
        self.errors = 0
        self.longest = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.buckets: dict[int, int] = {}


class LatencyWindow:
    """The recent calls of one key."""

    __slots__ = ("_slices", "_width")

    def __init__(self, width: float) -> None:
        self._width = width
        self._slices: list[_Slice] = [_Slice(-1) for _ in range(SLICES)]

    def record(
        self,
        seconds: float,
        error: bool,
        now: float,
        tokens: tuple[int, int, float] | None = None,
    ) -> None:
        """One call of ``seconds`` ended at ``now``; ``tokens`` is (input, output, cost)."""
        number = int(now / self._width)
        current = self._slices[number % SLICES]
        if current.number != number:
            current = self._slices[number % SLICES] = _Slice(number)
        current.count += 1
        if error:
            current.errors += 1
        if seconds > current.longest:
            current.longest = seconds
        bucket = math.ceil(math.log(seconds) / _LOG_GAMMA) if seconds > _SMALLEST else _LOWEST
        buckets = current.buckets
        buckets[bucket] = buckets.get(bucket, 0) + 1
        if tokens is not None:
            current.input_tokens += tokens[0]
            current.output_tokens += tokens[1]
            current.cost += tokens[2]

    def summary(self, now: float, covered: float) -> Summary:
        """The calls of the slices still in the window at ``now``, over ``covered`` seconds."""
        oldest = int(now / self._width) - SLICES + 1
        live = [s for s in self._slices if s.number >= oldest]
        merged: dict[int, int] = {}
        for piece in live:
            for bucket, n in piece.buckets.items():
                merged[bucket] = merged.get(bucket, 0) + n
        count = sum(s.count for s in live)
        p50, p95, p99 = _quantiles(merged, count, (0.50, 0.95, 0.99))
        return Summary(
            count=count,
            errors=sum(s.errors for s in live),
            seconds=covered,
            p50=p50,
            p95=p95,
            p99=p99,
            max=max((s.longest for s in live), default=0.0) if count else None,
            input_tokens=sum(s.input_tokens for s in live),
            output_tokens=sum(s.output_tokens for s in live),
            cost=sum(s.cost for s in live),
        )


def _quantiles(
    buckets: dict[int, int], count: int, quantiles: tuple[float, ...]
) -> list[float | None]:
    """The nearest-rank quantiles of the bucketed values, each its bucket's midpoint (the
    value within GAMMA of every value the bucket holds)."""
    if count == 0:
        return [None] * len(quantiles)
    ranks = [max(1, math.ceil(q * count)) for q in quantiles]
    found: list[float | None] = []
    seen = 0
    ordered = sorted(buckets.items())
    position = 0
    for rank in ranks:
        while seen < rank:
            seen += ordered[position][1]
            position += 1
        bucket = ordered[position - 1][0]
        found.append(2 * GAMMA**bucket / (GAMMA + 1))
    return found


class LatencyTable(Generic[K]):
    """Recent calls by key, at most ``max_keys`` keys (then ``other``).

    Args:
        window: seconds of the recent past kept.
        max_keys: keys with their own window; calls of any key past it go under ``other``.
        other: the key those calls are counted under.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        *,
        window: float,
        max_keys: int,
        other: K,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._max_keys = max_keys
        self._other = other
        self._clock = clock
        self._started = clock()
        self._windows: dict[K, LatencyWindow] = {}

    def record(
        self,
        key: K,
        seconds: float,
        error: bool = False,
        tokens: tuple[int, int, float] | None = None,
    ) -> None:
        """One call of ``key`` that took ``seconds`` and has just ended."""
        found = self._windows.get(key)
        if found is None:
            if len(self._windows) >= self._max_keys:
                key = self._other
                found = self._windows.get(key)
            if found is None:
                found = self._windows[key] = LatencyWindow(self.window / SLICES)
        found.record(seconds, error, self._clock(), tokens)

    def summaries(self) -> list[tuple[K, Summary]]:
        """Every key with calls in the window, busiest first."""
        now = self._clock()
        covered = min(self.window, now - self._started)
        found = [(key, w.summary(now, covered)) for key, w in list(self._windows.items())]
        found = [(key, summary) for key, summary in found if summary.count]
        found.sort(key=lambda item: -item[1].count)
        return found
