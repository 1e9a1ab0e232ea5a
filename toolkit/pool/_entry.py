"""One pooled object and what the pool knows about it."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Entry(Generic[T]):
    """A built object with its limits, fixed (jitter included) when it was built.

    ``expires`` is a time on the pool's clock (inf: never); ``uses_left`` counts acquires
    still allowed. ``holders`` counts the callers using it (shared mode: any number; exclusive
    mode: 0 or 1). A ``retired`` entry is lent no more and closed when its last holder leaves.
    ``good_at`` is when it was last known good (built, checked, or given back without error);
    ``checking`` is True while a background health check of it runs (shared mode).
    """

    __slots__ = (
        "checking",
        "expires",
        "good_at",
        "holders",
        "key",
        "obj",
        "reason",
        "retired",
        "uses_left",
    )

    def __init__(
        self, obj: T, key: Hashable, expires: float, uses_left: float, good_at: float
    ) -> None:
        self.obj = obj
        self.key = key
        self.expires = expires
        self.uses_left = uses_left
        self.good_at = good_at
        self.holders = 0
        self.retired = False
        self.checking = False
        self.reason = ""

    def worn(self, now: float) -> bool:
        """Past its age or use limit."""
        return now >= self.expires or self.uses_left <= 0
