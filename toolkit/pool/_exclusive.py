"""Exclusive lending: each caller gets an object nobody else uses until it is given back.

Per key, at most ``size`` objects: one per permit. Idle objects wait in a list (the most
recently returned is lent first); a caller that finds none builds one, and if it leaves while
the build runs, the build keeps its permit and its object joins the idle list. Given back, an
object is reset, or closed when the caller's block raised (``discard_on``), was cancelled, or
the object is worn; a worn object's replacement is built at once, in the background.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Hashable
from typing import TypeVar

from toolkit.pool._entry import Entry
from toolkit.pool._lending import KeyLender, Permit, finished
from toolkit.pool._objects import Objects
from toolkit.telemetry import names

T = TypeVar("T")

logger = logging.getLogger("toolkit.pool")


class ExclusiveLender(KeyLender[T]):
    """One key of an exclusive pool: ``idle`` objects, and ``used`` ones (lent or being
    checked)."""

    __slots__ = ("idle", "used")

    def __init__(self, objects: Objects[T], key: Hashable, now: float) -> None:
        super().__init__(objects, key, now)
        self.idle: list[Entry[T]] = []
        self.used = 0

    def take(self) -> Entry[T] | None:
        """The most recently returned idle object within its limits (LIFO keeps fewer objects
        warm, so the rest age out), unless it is due a check: then None, and it stays on top
        for :meth:`checkout`. Worn ones are closed on the way."""
        objects = self.objects
        idle = self.idle
        while idle:
            entry = idle.pop()
            if entry.worn(objects.clock()):
                objects.close_later(entry, names.POOL_DISCARD_RECYCLED)
            elif objects.check_due(entry):
                idle.append(entry)
                return None
            else:  # lent, as _lend() does (inline: this is every acquire's path)
                entry.uses_left -= 1
                entry.holders = 1
                self.used += 1
                return entry
        return None

    async def checkout(self, deadline: float, permit: Permit) -> Entry[T]:
        """An idle object known good or that passes its check (within the acquire's time
        left; failed ones are closed and the next one tried), else a new one. If the caller
        leaves while its build runs, the build takes over the permit."""
        entry = self.take()
        while entry is None and self.idle:  # the next idle object is due a check
            entry = self._lend(self.idle.pop())
            if not await self._healthy(entry, deadline):
                entry = self.take()
        if entry is not None:
            return entry
        task = self.spawn_build()
        objects = self.objects
        try:
            done = await finished(task, deadline - objects.clock())
        except BaseException:
            self._adopt(task)
            permit.held = False
            raise
        if not done:
            self._adopt(task)
            permit.held = False
            raise objects.timed_out("building an object")
        if task.cancelled():
            raise objects.closed_error()
        return self._lend(task.result())  # the factory's exception reaches the caller

    async def checkin(self, entry: Entry[T], exc: BaseException | None) -> None:
        """Reset the object and put it back on the idle list, or close it; pass the permit on."""
        objects = self.objects
        options = objects.options
        reason: str | None = None
        if isinstance(exc, asyncio.CancelledError):
            reason = names.POOL_DISCARD_CANCELLED
        elif exc is not None and options.discard_on(exc):
            reason = names.POOL_DISCARD_ERROR
        elif options.reset is not None:
            try:
                result = options.reset(entry.obj)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                self._drop(entry, names.POOL_DISCARD_CANCELLED)
                self.gate.leave()
                raise
            except Exception as exc2:
                logger.warning(
                    "pool %r: reset raised %s: %s; the object is closed",
                    objects.name,
                    type(exc2).__name__,
                    exc2,
                )
                reason = names.POOL_DISCARD_RESET_FAILED
        if reason is None and objects.closed:
            reason = names.POOL_DISCARD_CLOSED
        if reason is None and entry.worn(objects.clock()):
            reason = names.POOL_DISCARD_RECYCLED
        if reason is None:
            entry.holders = 0
            entry.good_at = objects.clock()
            self.used -= 1
            self.idle.append(entry)
        else:
            self._drop(entry, reason)
        self.gate.leave()
        if reason == names.POOL_DISCARD_RECYCLED and self.gate.try_enter():
            # Its replacement is built now, in the background, not on the next caller's path.
            self._adopt(self.spawn_build())

    def warm(self, count: int) -> list[asyncio.Task[Entry[T]]]:
        """Up to ``count`` builds, each holding a permit until its object lands idle."""
        builds = []
        for _ in range(count):
            if not self.gate.try_enter():
                break
            task = self.spawn_build()
            self._adopt(task)
            builds.append(task)
        return builds

    def drain(self, reason: str) -> None:
        while self.idle:
            self.objects.close_later(self.idle.pop(), reason)

    def counts(self) -> tuple[int, int]:
        return len(self.idle), self.used

    def busy(self) -> bool:
        return super().busy() or bool(self.used)

    def _lend(self, entry: Entry[T]) -> Entry[T]:
        entry.uses_left -= 1
        entry.holders = 1
        self.used += 1
        return entry

    def _drop(self, entry: Entry[T], reason: str) -> None:
        """Close a lent object instead of taking it back."""
        self.used -= 1
        entry.holders = 0
        self.objects.close_later(entry, reason)

    async def _healthy(self, entry: Entry[T], deadline: float) -> bool:
        """Check a lent object within the acquire's time left; a failed one is dropped."""
        objects = self.objects
        try:
            healthy = await objects.passes(entry, deadline - objects.clock())
        except asyncio.CancelledError:
            # Cancelled mid-check: we cannot know its state; the permit goes back upstream.
            self._drop(entry, names.POOL_DISCARD_CANCELLED)
            raise
        if healthy:
            entry.good_at = objects.clock()
        else:
            self._drop(entry, names.POOL_DISCARD_UNHEALTHY)
        return healthy

    def _adopt(self, task: asyncio.Task[Entry[T]]) -> None:
        """The build holds a permit nobody else gives back: when it ends, its object joins
        the idle list (or its failure is logged) and the permit passes on."""

        def landed(task: asyncio.Task[Entry[T]]) -> None:
            if not task.cancelled():
                if (exc := task.exception()) is not None:
                    self.objects.build_failed(self.key, exc)
                elif self.objects.closed:
                    self.objects.close_later(task.result(), names.POOL_DISCARD_CLOSED)
                else:
                    self.idle.append(task.result())
            self.gate.leave()

        task.add_done_callback(landed)
