"""GCRA arithmetic shared by the in-memory backend; ``lua/gcra.lua`` is its Redis twin.

Everything is in integer microseconds so both twins compute the same answers exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class GcraResult:
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
    now: int, tats: Sequence[int | None], limits: Sequence[GcraLimit], cost: int
) -> tuple[list[int], list[int]]:
    """Run GCRA at time ``now`` (µs) against stored TATs; mirrors ``gcra.lua`` line for line.

    Returns the reply ``gcra.lua`` would (as a list) and the TATs to store when allowed.
    """
    allowed = 1
    retry_after = 0
    new_tats: list[int] = []
    reply = [0, 0]
    for limit, stored in zip(limits, tats, strict=True):
        interval, period = limit.interval_us, limit.period_us
        tat = now if stored is None or stored < now else stored
        new_tat = tat + cost * interval
        if new_tat - now <= period:
            new_tats.append(new_tat)
            reply += [(period - (new_tat - now)) // interval, new_tat - now]
        else:
            allowed = 0
            retry_after = max(retry_after, new_tat - period - now)
            new_tats.append(tat)
            reply += [max(0, (period - (tat - now)) // interval), tat - now]
    reply[0], reply[1] = allowed, retry_after
    return reply, new_tats
