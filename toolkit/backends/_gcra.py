"""GCRA values shared by the backends: ``lua/gcra.lua`` on Redis, ``MemoryBackend.gcra`` in
process. Everything is in integer microseconds so both twins compute the same answers exactly.
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
