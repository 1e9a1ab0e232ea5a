"""What both lending strategies do with a pool's objects, and the pool-wide state they share.

Objects are built (one factory call; each one's limits drawn, jitter included), checked and
closed here, in tasks the pool owns (``tasks``), so no build is lost when its caller leaves and
``AgentPool.close`` can cancel and await them. ``closed`` and the pool's instruments live here
too, because every strategy reads them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from opentelemetry import metrics, trace

from toolkit.errors import PoolClosedError, PoolTimeoutError
from toolkit.pool._entry import Entry
from toolkit.pool._options import PoolOptions
from toolkit.pool._telemetry import PoolTelemetry
from toolkit.telemetry import names

T = TypeVar("T")

logger = logging.getLogger("toolkit.pool")

_CANCELLED_AT_CLOSE = ("toolkit.pool.build", "toolkit.pool.check")
"""The tasks ``stop`` cancels (by name prefix); closes are let finish."""


class Objects(Generic[T]):
    """Builds, checks and closes one pool's objects; holds its tasks, instruments and
    ``closed``."""

    __slots__ = ("_counts", "clock", "closed", "name", "options", "tasks", "telemetry")

    def __init__(self, options: PoolOptions[T], counts: Callable[[], tuple[int, int, int]]) -> None:
        self.options = options
        self.name = options.name
        self.clock = options.clock
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.telemetry: PoolTelemetry | None = None
        """The pool's instruments, created by :meth:`bind` at start or first use."""
        self._counts = counts

    # --- instruments and errors ----------------------------------------------------------------

    def bind(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> PoolTelemetry:
        """Create the pool's instruments on the constructor's providers, else those given
        (``start()``'s), else the global ones."""
        options = self.options
        telemetry = self.telemetry = PoolTelemetry(
            self.name,
            self._counts,
            threshold=options.settings.wait_threshold,
            meter_provider=options.meter_provider or meter_provider,
            tracer_provider=options.tracer_provider or tracer_provider,
        )
        return telemetry

    def instruments(self) -> PoolTelemetry:
        return self.telemetry or self.bind()

    def closed_error(self) -> PoolClosedError:
        return PoolClosedError(f"pool {self.name!r} is closed", pool=self.name)

    def timed_out(self, doing: str) -> PoolTimeoutError:
        """The error of an acquire past ``acquire_timeout``, counted."""
        self.instruments().timed_out(names.POOL_PHASE_ACQUIRE)
        return PoolTimeoutError(
            f"pool {self.name!r}: no object within acquire_timeout="
            f"{self.options.settings.acquire_timeout:g}s ({doing})",
            pool=self.name,
        )

    def build_timed_out(self, key: Hashable) -> PoolTimeoutError:
        """The error of a build past ``create_timeout`` (its factory call cancelled); counted
        by each acquire it reaches (``AgentPool``), since the build runs in a task of its
        own, outside any caller's span."""
        of_key = "" if key is None else f" for key {key!r}"
        return PoolTimeoutError(
            f"pool {self.name!r}: building an object{of_key} took longer than create_timeout="
            f"{self.options.settings.create_timeout:g}s; the factory call was cancelled",
            pool=self.name,
            setting="create_timeout",
        )

    # --- tasks the pool owns ------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any], kind: str) -> asyncio.Task[Any]:
        """Run ``coroutine`` in a task named ``toolkit.pool.<kind>:<pool name>``."""
        task = asyncio.create_task(coroutine, name=f"toolkit.pool.{kind}:{self.name}")
        self.tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: whoever needed it has it, or it was logged

    async def stop(self, within: float) -> None:
        """Cancel the builds and checks, and wait up to ``within`` seconds for every task
        (closes included) to end."""
        for task in list(self.tasks):
            if task.get_name().startswith(_CANCELLED_AT_CLOSE):
                task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=within)

    # --- builds -------------------------------------------------------------------------------

    async def make(self, key: Hashable) -> T:
        """One factory call (``factory(key)`` when it takes the key), its time recorded."""
        options = self.options
        telemetry = self.instruments()
        started = self.clock()
        result = options.factory(key) if options.takes_key else options.factory()
        built: T = await result if inspect.isawaitable(result) else result
        telemetry.create_time.record(self.clock() - started, telemetry.attributes)
        return built

    def entry(self, obj: T, key: Hashable) -> Entry[T]:
        """A new object with its limits, each shortened by up to ``recycle_jitter``."""
        settings = self.options.settings
        random = self.options.random
        jitter = settings.recycle_jitter
        age = settings.recycle_after
        expires = math.inf if age is None else self.clock() + age * (1 - jitter * random())
        uses = settings.max_uses
        uses_left = math.inf if uses is None else max(1, math.floor(uses * (1 - jitter * random())))
        return Entry(obj, key, expires, uses_left, good_at=self.clock())

    def build_failed(self, key: Hashable, exc: BaseException) -> None:
        """Log a build nobody waited for (a warm-up, a replacement, a caller that left)."""
        logger.warning(
            "pool %r: building an object for key %r failed: %s: %s",
            self.name,
            key,
            type(exc).__name__,
            exc,
        )

    # --- checks -------------------------------------------------------------------------------

    def check_due(self, entry: Entry[T]) -> bool:
        """Whether ``health_check`` should run on an object before it is trusted again."""
        options = self.options
        return (
            options.health_check is not None
            and self.clock() - entry.good_at >= options.settings.check_interval
        )

    async def passes(self, entry: Entry[T], within: float) -> bool:
        """Run the health check within ``within`` seconds; False, an exception or a
        timeout fails it (logged). Cancellation propagates."""
        check = self.options.health_check
        if check is None:
            return True
        try:
            async with asyncio.timeout(max(0.0, within)):
                result = check(entry.obj)
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.info("pool %r: health check failed (%s: %s)", self.name, type(exc).__name__, exc)
            return False
        return result is not False

    # --- closes -------------------------------------------------------------------------------

    def close_later(self, entry: Entry[T], reason: str) -> None:
        """Close the object in a task the pool owns; nobody waits for it."""
        self.instruments().discarded(reason)
        self.spawn(self.close_object(entry.obj), "close")

    async def close_object(self, obj: Any) -> None:
        close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
        if close is None:
            return
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.warning(
                "pool %r: closing an object raised %s: %s", self.name, type(exc).__name__, exc
            )
