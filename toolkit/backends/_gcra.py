"""GCRA arithmetic shared by the in-memory backend; ``lua/gcra.lua`` is its Redis twin.

Everything is in integer microseconds so both twins compute the same answers exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

MICROSECONDS = 1_000_000


@dataclass(frozen=True, slots=True)
class GcraLimit:
    """``amount`` units per period, all of which may be spent in one burst.

    Build it with :meth:`of`; the microsecond fields are what both twins compute with.
    """

    amount: int
    period_us: int
    interval_us: int

    @classmethod
    def of(cls, amount: int, period: float) -> GcraLimit:
        """``amount`` units per ``period`` seconds."""
        period_us = round(period * MICROSECONDS)
        # Rounding the emission interval down can only admit the burst, never refuse it.
        return cls(amount, period_us, max(1, period_us // amount))


class GcraResult(NamedTuple):
    """Outcome of one GCRA call over several limits.

    Attributes:
        allowed: every limit had room for the cost; only then were they charged.
        retry_after: seconds until the same request could pass (0 when allowed).
        remaining: per limit, whole units left after this request.
        reset_after: per limit, seconds until it is entirely unused again; when rejected,
            seconds until its current debt is repaid.
    """

    allowed: bool
    retry_after: float
    remaining: tuple[int, ...]
    reset_after: tuple[float, ...]

    @classmethod
    def from_reply(cls, reply: Sequence[int]) -> GcraResult:
        """Decode the flat integer reply of ``gcra.lua``."""
        pairs = reply[2:]
        return cls(
            allowed=bool(reply[0]),
            retry_after=reply[1] / MICROSECONDS,
            remaining=tuple(int(r) for r in pairs[0::2]),
            reset_after=tuple(r / MICROSECONDS for r in pairs[1::2]),
        )


def decide(
    now: int, stored: Sequence[int | None], limits: Sequence[GcraLimit], cost: int
) -> tuple[GcraResult, list[int]]:
    """Run GCRA at time ``now`` (µs) against stored TATs; mirrors ``gcra.lua`` step for step.

    Returns what ``gcra.lua`` would answer and the TATs to store (unchanged when refused).
    """
    # Plain loops, no comprehensions: this runs on every request of the in-memory backend.
    allowed = True
    retry_after = 0
    tats: list[int] = []
    new_tats: list[int] = []
    for tat, limit in zip(stored, limits, strict=True):
        if tat is None or tat < now:
            tat = now
        new_tat = tat + cost * limit.interval_us
        tats.append(tat)
        new_tats.append(new_tat)
        if new_tat - now > limit.period_us:
            allowed = False
            retry_after = max(retry_after, new_tat - limit.period_us - now)
    result = new_tats if allowed else tats
    remaining: list[int] = []
    reset_after: list[float] = []
    for tat, limit in zip(result, limits, strict=True):
        remaining.append(max(0, (limit.period_us - (tat - now)) // limit.interval_us))
        reset_after.append((tat - now) / MICROSECONDS)
    return GcraResult(
        allowed, retry_after / MICROSECONDS, tuple(remaining), tuple(reset_after)
    ), result
