"""Lease: what ``pool.acquire(key)`` returns, one use of one object as an async context manager."""

from __future__ import annotations

from collections.abc import Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from toolkit._default import NOT_YET
from toolkit.pool._entry import Entry
from toolkit.pool._lending import KeyLender

if TYPE_CHECKING:
    from toolkit.pool.pool import AgentPool

T = TypeVar("T")


class Lease(Generic[T]):
    """``async with pool.acquire(key) as obj``: one use of one object. Single use."""

    __slots__ = ("_direct", "_entry", "_key", "_lender", "_pool", "_since")

    def __init__(self, pool: AgentPool[T], key: Hashable) -> None:
        self._pool = pool
        self._key = key
        self._lender: KeyLender[T] | None = None
        self._entry: Entry[T] | None = None
        self._direct: Any = NOT_YET  # the object built with the pool flag off (may be None)
        self._since = 0.0

    async def __aenter__(self) -> T:
        pool = self._pool
        if self._lender is not None or self._direct is not NOT_YET:
            raise RuntimeError("a Lease is used once: call pool.acquire() again")
        if not pool._enabled():
            obj: T = await pool._build_direct(self._key)
            self._direct = obj
            return obj
        self._lender, self._entry = await pool._checkout(self._key)
        self._since = pool._clock()
        return self._entry.obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._direct is not NOT_YET:
            direct, self._direct = self._direct, None
            await self._pool._close_direct(direct)
            return
        lender, entry = self._lender, self._entry
        if lender is None or entry is None:
            return
        self._entry = None
        objects = lender.objects
        telemetry = objects.telemetry or objects.bind()
        telemetry.use_time.record(objects.clock() - self._since, telemetry.attributes)
        await lender.checkin(entry, exc)
