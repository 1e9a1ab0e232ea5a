"""AgentPool: expensive objects (agents, clients, sessions, sandboxes) built ahead and lent out.

Sits between a route and what it needs to build per request: the route asks the pool
(``async with pool.acquire(model) as agent``), the pool lends a built object, waits for one
(bounded queue, bounded time) or builds one, and takes it back. ``install(app, pools=[...])``
builds them before the first request and closes them at shutdown.

Invariants, per key, at every await (and so under any cancellation or timeout):

* ``gate.free + permits held == size``. A permit is held by a caller from the moment it
  enters until its object is given back, or, if the caller leaves while the object is still
  being built, by the build until it ends. Every path out of an acquire (return, exception,
  ``CancelledError``, ``asyncio.timeout`` firing) either keeps the permit with the lent
  object or gives it back synchronously; nothing is given back twice.
* Each object is in exactly one place: the idle list, lent (``used``), or closing. Objects
  that failed a check, raised in use (exclusive mode), outlived their limits or whose caller
  was cancelled mid-use are closed and never lent again.
* A build is never lost: it runs in a task the pool owns. If its caller is cancelled or
  times out, the object it produces joins the idle list and the permit passes on.
* Exclusive mode: objects per key <= ``size``. Shared mode: one object per key, built by one
  build however many callers arrive together (single flight), used by <= ``size`` at once;
  its replacement (recycling) is built in the background while the old one is still lent.
* At most ``max_keys`` keys; a new key evicts an idle one (nothing held, queued or building).

Nothing is awaited while the counts are inconsistent: every count changes synchronously.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import math
import random as _random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, overload

from opentelemetry import metrics, trace

from toolkit.errors import (
    ConfigurationError,
    PoolClosedError,
    PoolExhaustedError,
    PoolTimeoutError,
)
from toolkit.flags import BOOLEAN, ON, POOL, FlagDefinition, FlagSource, current_store
from toolkit.flags._registry import REGISTRY
from toolkit.pool._entry import Entry
from toolkit.pool._gate import Gate
from toolkit.pool._telemetry import PoolTelemetry
from toolkit.settings import (
    DEFAULT_EXCLUSIVE_POOL_SIZE,
    PoolMode,
    PoolSettings,
    validate_arguments,
)
from toolkit.telemetry import names

T = TypeVar("T")

logger = logging.getLogger("toolkit.pool")

DEFAULTS: Final = PoolSettings.model_validate({})
"""The default of every AgentPool argument (``toolkit.settings.PoolSettings``)."""
CLOSE_TIMEOUT: Final = 5.0
"""Seconds :meth:`AgentPool.close` waits for builds to stop and objects to close."""


class _ModeDefault(enum.Enum):
    TOKEN = 0


MODE_DEFAULT: Final = _ModeDefault.TOKEN
"""``discard_on`` default: ``(Exception,)`` in exclusive mode, ``()`` in shared mode."""

DiscardOn = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A pool's counts, over every key: ``idle`` objects, ``used`` ones (lent or being
    checked), ``creating`` builds running, ``pending`` callers queued, ``holders`` callers
    holding a permit."""

    idle: int
    used: int
    creating: int
    pending: int
    holders: int


_UNBOUNDED: Final = sys.maxsize
"""The permits of a shared pool whose ``size`` is unset: callers are never queued."""
_FLAG_KEY: Final = re.compile(r"[^a-z0-9._-]+")


class _Key(Generic[T]):
    """Everything about one key of a pool."""

    __slots__ = ("building", "creating", "gate", "idle", "key", "last_used", "shared", "used")

    def __init__(self, key: Hashable, size: int, now: float) -> None:
        self.key = key
        self.gate = Gate(size)
        self.idle: list[Entry[T]] = []
        self.used = 0
        self.creating = 0
        self.shared: Entry[T] | None = None
        self.building: asyncio.Task[Entry[T]] | None = None
        self.last_used = now

    def busy(self) -> bool:
        """Anything held, queued or being built: a key that may not be evicted."""
        gate = self.gate
        return bool(
            gate.free != gate.size
            or gate.waiters
            or self.creating
            or self.building is not None
            or self.used
            or (self.shared is not None and self.shared.holders)
        )


class AgentPool(Generic[T]):
    """Lend built objects per key; build them ahead, bound who waits, close what goes bad.

        pool = toolkit.AgentPool(make_sandbox, size=4, acquire_timeout="5s")
        toolkit.install(app, pools=[pool])          # built before the first request

        async with pool.acquire() as sandbox:       # or pool.acquire(key) per configuration
            await sandbox.run(code)

    **Modes.** ``"exclusive"`` (default): each caller gets an object nobody else uses until
    it is given back: HTTP clients, MCP sessions, sandboxes, mutable agents. At most ``size``
    exist per key (8 when unset); ``reset`` clears per-request state on return. ``"shared"``:
    one object per key, built once (however many callers arrive together) and used by every
    caller at once, or by at most ``size`` when it is set: objects that are safe to share, such
    as a pydantic-ai ``Agent``.

    **Keys** are bounded: past ``max_keys``, a new key evicts the least recently used idle key
    (its objects closed), or is refused with :class:`~toolkit.errors.PoolExhaustedError` when
    every key is busy. Never take a key from a request unchecked: map it onto a known set.

    **When there is no room**, a caller queues (first come, first served) if fewer than
    ``max_waiting`` already wait, else gets :class:`~toolkit.errors.PoolExhaustedError` at once;
    an acquire that has not got its object within ``acquire_timeout`` (waiting and building
    together) gets :class:`~toolkit.errors.PoolTimeoutError`. ``install()`` answers both
    with a 503 problem+json and ``Retry-After``.

    **What goes bad is closed** (``aclose()`` or ``close()``, awaited if it is a coroutine,
    in a task the pool owns): an object past ``recycle_after`` or ``max_uses`` (each shortened
    by up to ``recycle_jitter`` at random), one whose ``health_check`` fails, whose ``reset``
    raises, or whose caller's block raised an exception ``discard_on`` accepts; in exclusive
    mode also one whose caller was cancelled while using it. A recycled object's replacement
    is built in the background: in shared mode callers go on using the old object until the
    new one is ready, in exclusive mode the pool refills itself after closing it.
    ``health_check`` runs only on an object not known good for ``check_interval``: at
    checkout in exclusive mode, in the background (callers not held) in shared mode.

    The ``pool`` flag turns every pool off at the next acquire, on every instance, and the
    flag ``pool.<name>`` (declared by the pool) this one only: each acquire then builds its
    own object and closes it afterwards (the path before pooling).

    Args:
        factory: builds one object: ``factory()``, or ``factory(key)`` when it has a required
            positional parameter; sync or async. A sync factory runs on the event loop.
        name: ``toolkit.pool.name`` of its metrics; the factory's name when None.
        mode: ``"exclusive"`` or ``"shared"`` (see above).
        size: per key, objects (exclusive; 8 when None) or callers at once (shared; no bound
            when None).
        max_keys: keys kept at once; idle keys are evicted past it, busy ones refused.
        max_waiting: per key, callers that may queue; 0 refuses as soon as all are lent.
        acquire_timeout: seconds (or ``"5s"``) an acquire may take, waiting and building.
        create_timeout: seconds one factory call may take.
        recycle_after: seconds (or ``"30m"``) after which an object is replaced; never when
            None.
        max_uses: acquires after which an object is replaced; never when None.
        recycle_jitter: share (0 to <1) by which each object's limits are shortened at random.
        wait_threshold: seconds; an acquire at least this long gets a ``toolkit.pool.wait``
            span.
        reset: awaited (or called) with the object when an exclusive caller gives it back;
            not allowed in shared mode, where others are using it.
        health_check: called with an object not known good for ``check_interval``; False,
            an exception or a timeout closes it. Exclusive: at checkout, bounded by the
            acquire's time left, and the next object is tried. Shared: in the background,
            bounded by ``acquire_timeout``, and a replacement is built.
        check_interval: seconds (or ``"30s"``) an object stays known good after it was
            built, checked or given back without error; 0 checks at every checkout.
        discard_on: exception types (or a predicate) that close the object when raised in
            the caller's block; ``MODE_DEFAULT`` is ``(Exception,)`` exclusive, ``()`` shared.
        warm: objects to build at :meth:`start`: a count for the default key (``None``), or
            ``{key: count}``; None builds one for the default key when the factory takes no
            key, nothing otherwise. In shared mode any count builds the key's one object.
        flags: where the ``pool`` flag is read; the current flag store when None.
        meter_provider / tracer_provider: for its metrics and spans; those given to
            :meth:`start` (``install()`` passes the app's), else the global ones, when None.
        clock: monotonic seconds, for ages and timings (tests pass a fake one).
        random: returns a float in [0, 1), for the jitter.

    Raises:
        ConfigurationError: at construction, for an invalid argument.
    """

    @overload
    def __init__(
        self: AgentPool[T],
        factory: Callable[..., Awaitable[T]],
        *,
        name: str | None = ...,
        mode: PoolMode = ...,
        size: int | None = ...,
        max_keys: int = ...,
        max_waiting: int = ...,
        acquire_timeout: str | float = ...,
        create_timeout: str | float = ...,
        recycle_after: str | float | None = ...,
        max_uses: int | None = ...,
        recycle_jitter: float = ...,
        wait_threshold: str | float = ...,
        check_interval: str | float = ...,
        reset: Callable[[T], Any] | None = ...,
        health_check: Callable[[T], Any] | None = ...,
        discard_on: DiscardOn | _ModeDefault = ...,
        warm: int | Mapping[Hashable, int] | None = ...,
        flags: FlagSource | None = ...,
        meter_provider: metrics.MeterProvider | None = ...,
        tracer_provider: trace.TracerProvider | None = ...,
        clock: Callable[[], float] = ...,
        random: Callable[[], float] = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: AgentPool[T],
        factory: Callable[..., T],
        *,
        name: str | None = ...,
        mode: PoolMode = ...,
        size: int | None = ...,
        max_keys: int = ...,
        max_waiting: int = ...,
        acquire_timeout: str | float = ...,
        create_timeout: str | float = ...,
        recycle_after: str | float | None = ...,
        max_uses: int | None = ...,
        recycle_jitter: float = ...,
        wait_threshold: str | float = ...,
        check_interval: str | float = ...,
        reset: Callable[[T], Any] | None = ...,
        health_check: Callable[[T], Any] | None = ...,
        discard_on: DiscardOn | _ModeDefault = ...,
        warm: int | Mapping[Hashable, int] | None = ...,
        flags: FlagSource | None = ...,
        meter_provider: metrics.MeterProvider | None = ...,
        tracer_provider: trace.TracerProvider | None = ...,
        clock: Callable[[], float] = ...,
        random: Callable[[], float] = ...,
    ) -> None: ...

    def __init__(
        self,
        factory: Callable[..., Any],
        *,
        name: str | None = None,
        mode: PoolMode = DEFAULTS.mode,
        size: int | None = DEFAULTS.size,
        max_keys: int = DEFAULTS.max_keys,
        max_waiting: int = DEFAULTS.max_waiting,
        acquire_timeout: str | float = DEFAULTS.acquire_timeout,
        create_timeout: str | float = DEFAULTS.create_timeout,
        recycle_after: str | float | None = DEFAULTS.recycle_after,
        max_uses: int | None = DEFAULTS.max_uses,
        recycle_jitter: float = DEFAULTS.recycle_jitter,
        wait_threshold: str | float = DEFAULTS.wait_threshold,
        check_interval: str | float = DEFAULTS.check_interval,
        reset: Callable[[Any], Any] | None = None,
        health_check: Callable[[Any], Any] | None = None,
        discard_on: DiscardOn | _ModeDefault = MODE_DEFAULT,
        warm: int | Mapping[Hashable, int] | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not callable(factory):
            raise ConfigurationError(
                f"AgentPool(factory={factory!r}): a function (or class) that builds one "
                "object, e.g. AgentPool(make_agent)"
            )
        try:
            settings = validate_arguments(
                PoolSettings,
                {
                    "mode": mode,
                    "size": size,
                    "max_keys": max_keys,
                    "max_waiting": max_waiting,
                    "acquire_timeout": acquire_timeout,
                    "create_timeout": create_timeout,
                    "recycle_after": recycle_after,
                    "max_uses": max_uses,
                    "recycle_jitter": recycle_jitter,
                    "wait_threshold": wait_threshold,
                    "check_interval": check_interval,
                },
            )
        except ConfigurationError as exc:
            raise ConfigurationError(
                str(exc).replace("invalid toolkit settings:", "invalid AgentPool arguments:")
            ) from None
        self.name = name if name is not None else getattr(factory, "__name__", "pool")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(
                f"AgentPool(name={name!r}): a non-empty string, e.g. name='support-agent'"
            )
        self.settings = settings
        self.shared = settings.mode == "shared"
        if settings.size is not None:
            self._size = settings.size
        else:
            self._size = _UNBOUNDED if self.shared else DEFAULT_EXCLUSIVE_POOL_SIZE
        self.flag = "pool." + (_FLAG_KEY.sub("-", self.name.lower()).strip("-._") or "pool")[:90]
        """This pool's own switch, under the global ``pool`` one."""
        REGISTRY.declare(
            FlagDefinition(self.flag, BOOLEAN, ON, f"Agent pool {self.flag[5:]}.", capability=True)
        )
        for hook, value in (("reset", reset), ("health_check", health_check)):
            if value is not None and not callable(value):
                raise ConfigurationError(
                    f"AgentPool({hook}={value!r}): a function called with the object"
                )
        if reset is not None and self.shared:
            raise ConfigurationError(
                "AgentPool(reset=..., mode='shared'): a shared object is in use by other "
                "callers when one gives it back, so it cannot be reset; use mode='exclusive'"
            )
        self._factory = factory
        self._takes_key = _takes_key(factory)
        self._reset = reset
        self._health_check = health_check
        self._discard_on = _discard_predicate(discard_on, self.shared)
        self._warm = _warm_plan(warm, self._takes_key, settings, self._size)
        self._flags = flags
        self._meter_provider = meter_provider
        self._tracer_provider = tracer_provider
        self._clock = clock
        self._random = random
        self._max_keys = settings.max_keys
        self._check_interval = settings.check_interval
        self._max_waiting = settings.max_waiting
        self._acquire_timeout = settings.acquire_timeout
        self._create_timeout = settings.create_timeout
        self._keys: dict[Hashable, _Key[T]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._telemetry: PoolTelemetry | None = None
        self._closed = False
        self._started = False

    def __repr__(self) -> str:
        return (
            f"AgentPool(name={self.name!r}, mode={self.settings.mode!r}, size={self.settings.size})"
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(
        self,
        *,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        """Build the ``warm`` objects, concurrently, and return when all are built or failed
        (each bounded by ``create_timeout``; a failure is logged, and that object is built on
        demand later). The providers and flags given are used unless the constructor had
        its own. Called by ``install()``'s lifespan; a second call does nothing."""
        if self._started:
            return
        self._started = True
        if self._flags is None:
            self._flags = flags
        if self._telemetry is None:
            self._meter_provider = self._meter_provider or meter_provider
            self._tracer_provider = self._tracer_provider or tracer_provider
            self._bind()
        builds: list[asyncio.Task[Entry[T]]] = []
        for key, count in self._warm.items():
            state = self._state(key)
            if self.shared:
                builds.append(self._shared_build(state))
                continue
            for _ in range(count):
                if not state.gate.try_enter():
                    break
                task = self._spawn_build(state)
                self._adopt(state, task)
                builds.append(task)
        if builds:
            await asyncio.wait(builds)

    async def close(self) -> None:
        """Lend nothing more: queued callers get PoolClosedError, idle objects are closed,
        builds are cancelled, lent objects are closed when given back. Waits up to
        :data:`CLOSE_TIMEOUT` seconds for the closing to finish. Called at shutdown."""
        self._closed = True
        error = PoolClosedError(f"pool {self.name!r} is closed", pool=self.name)
        for state in self._keys.values():
            state.gate.fail_waiters(error)
            while state.idle:
                self._close_later(state.idle.pop(), names.POOL_DISCARD_CLOSED)
            entry = state.shared
            if entry is not None:
                self._retire(state, entry, names.POOL_DISCARD_CLOSED)
        for task in list(self._tasks):
            if task.get_name().startswith(("toolkit.pool.build", "toolkit.pool.check")):
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)

    def stats(self) -> PoolStats:
        """The pool's counts now, over every key."""
        idle = used = creating = pending = holders = 0
        for state in self._keys.values():
            creating += state.creating
            pending += len(state.gate.waiters)
            holders += state.gate.size - state.gate.free
            if self.shared:
                entry = state.shared
                if entry is not None:
                    if entry.holders:
                        used += 1
                    else:
                        idle += 1
                used += state.used  # retired entries still held
            else:
                idle += len(state.idle)
                used += state.used
        return PoolStats(idle, used, creating, pending, holders)

    # --- acquire -----------------------------------------------------------------------------

    def acquire(self, key: Hashable = None) -> Lease[T]:
        """An object for ``key`` (the default key when None), as an async context manager:

            async with pool.acquire("gpt-4o") as agent:
                ...

        Raises (on entry): PoolExhaustedError (queue full), PoolTimeoutError, PoolClosedError,
        or the factory's own exception."""
        return Lease(self, key)

    def _state(self, key: Hashable) -> _Key[T]:
        now = self._clock()
        state = self._keys.get(key)
        if state is None:
            if key is not None and not self._takes_key:
                raise TypeError(
                    f"pool {self.name!r}: acquire({key!r}) passes a key, but its factory "
                    "takes none; give the factory a parameter (def make(key): ...)"
                )
            if len(self._keys) >= self._max_keys and not self._evict_idle_key():
                (self._telemetry or self._bind()).refused(names.POOL_TOO_MANY_KEYS)
                raise PoolExhaustedError(
                    f"pool {self.name!r}: all max_keys={self._max_keys} keys are in use; a "
                    f"new key ({key!r}) waits until one is idle. Keys taken from requests "
                    "unchecked grow without bound: map them onto a known set",
                    pool=self.name,
                )
            state = self._keys[key] = _Key(key, self._size, now)
        state.last_used = now
        return state

    def _evict_idle_key(self) -> bool:
        """Make room for a key: close the least recently used idle key's objects and forget
        it. False when every key is busy."""
        idle = [state for state in self._keys.values() if not state.busy()]
        if not idle:
            return False
        state = min(idle, key=lambda state: state.last_used)
        del self._keys[state.key]
        while state.idle:
            self._close_later(state.idle.pop(), names.POOL_DISCARD_EVICTED)
        if state.shared is not None:
            self._retire(state, state.shared, names.POOL_DISCARD_EVICTED)
        return True

    def _bind(self) -> PoolTelemetry:
        telemetry = self._telemetry = PoolTelemetry(
            self.name,
            self._counts,
            threshold=self.settings.wait_threshold,
            meter_provider=self._meter_provider,
            tracer_provider=self._tracer_provider,
        )
        return telemetry

    def _counts(self) -> tuple[int, int, int]:
        stats = self.stats()
        return stats.idle, stats.used, stats.pending

    def _enabled(self) -> bool:
        flags = self._flags or current_store()
        return flags.is_enabled(POOL) and flags.is_enabled(self.flag)

    async def _checkout(self, key: Hashable) -> tuple[_Key[T], Entry[T]]:
        """Take a permit and an object; see the module docstring for the invariants."""
        if self._closed:
            raise PoolClosedError(f"pool {self.name!r} is closed", pool=self.name)
        telemetry = self._telemetry or self._bind()
        state = self._state(key)
        started = self._clock()
        if state.gate.try_enter():
            # The common case, with no await: a good object is there, nothing to check.
            entry = self._take_shared(state) if self.shared else self._take_idle(state)
            if entry is not None and (self.shared or not self._check_due(entry)):
                telemetry.wait_time.record(self._clock() - started, telemetry.attributes)
                return state, entry
            return await self._checkout_slow(state, started, permit=True, taken=entry)
        return await self._checkout_slow(state, started, permit=False)

    async def _checkout_slow(
        self, state: _Key[T], started: float, *, permit: bool, taken: Entry[T] | None = None
    ) -> tuple[_Key[T], Entry[T]]:
        telemetry = self._telemetry or self._bind()
        deadline = started + self._acquire_timeout
        held = _Permit(permit)
        error_type: str | None = None
        try:
            if not held.held:
                if len(state.gate.waiters) >= self._max_waiting:
                    error_type = names.POOL_QUEUE_FULL
                    telemetry.refused(error_type)
                    raise PoolExhaustedError(
                        f"pool {self.name!r}: all {self._size} in use and "
                        f"{self._max_waiting} callers already waiting",
                        pool=self.name,
                    )
                if not await state.gate.wait(deadline - self._clock()):
                    raise self._timed_out(telemetry, "waiting for room")
                held.held = True
            if self.shared:
                entry = await self._checkout_shared(state, deadline)
            else:
                entry = await self._checkout_exclusive(state, deadline, held, taken)
            return state, entry
        except PoolTimeoutError:
            error_type = names.POOL_TIMEOUT
            raise
        except asyncio.CancelledError:
            error_type = "cancelled"
            raise
        except BaseException as exc:
            error_type = error_type or type(exc).__qualname__
            raise
        finally:
            if held.held and error_type is not None:
                state.gate.leave()
            telemetry.waited(self._clock() - started, error_type)

    def _timed_out(self, telemetry: PoolTelemetry, doing: str) -> PoolTimeoutError:
        telemetry.refused(names.POOL_TIMEOUT)
        return PoolTimeoutError(
            f"pool {self.name!r}: no object within acquire_timeout="
            f"{self._acquire_timeout:g}s ({doing})",
            pool=self.name,
        )

    async def _checkout_exclusive(
        self, state: _Key[T], deadline: float, held: _Permit, taken: Entry[T] | None
    ) -> Entry[T]:
        """With a permit held: an idle object (``taken``, or the next one) that is known good
        or passes its check, else a new one. If the caller leaves while its build runs, the
        build takes over the permit."""
        entry = taken if taken is not None else self._take_idle(state)
        while entry is not None:
            if not self._check_due(entry) or await self._healthy(state, entry, deadline):
                return entry
            entry = self._take_idle(state)
        task = self._spawn_build(state)
        try:
            done = await _wait(task, deadline - self._clock())
        except BaseException:
            self._adopt(state, task)
            held.held = False
            raise
        if not done:
            self._adopt(state, task)
            held.held = False
            raise self._timed_out(self._telemetry or self._bind(), "building an object")
        if task.cancelled():
            raise PoolClosedError(f"pool {self.name!r} is closed", pool=self.name)
        entry = task.result()  # the factory's exception reaches the caller
        entry.uses_left -= 1
        entry.holders = 1
        state.used += 1
        return entry

    async def _checkout_shared(self, state: _Key[T], deadline: float) -> Entry[T]:
        """With a permit held: the key's object, built if missing (its checks and its
        replacement run in the background, see :meth:`_take_shared`)."""
        while True:
            if self._closed:
                raise PoolClosedError(f"pool {self.name!r} is closed", pool=self.name)
            entry = self._take_shared(state)
            if entry is not None:
                return entry
            task = state.building or self._shared_build(state)
            if not await _wait(task, deadline - self._clock()):
                # The build goes on and lands as the key's object; it needs no permit.
                raise self._timed_out(self._telemetry or self._bind(), "building an object")
            if task.cancelled():
                raise PoolClosedError(f"pool {self.name!r} is closed", pool=self.name)
            task.result()  # the factory's exception reaches the caller

    def _take_idle(self, state: _Key[T]) -> Entry[T] | None:
        """Pop the most recently returned idle object still within its limits (LIFO keeps
        fewer objects warm, so the rest age out); worn ones are closed on the way."""
        idle = state.idle
        while idle:
            entry = idle.pop()
            if entry.worn(self._clock()):
                self._close_later(entry, names.POOL_DISCARD_RECYCLED)
                continue
            entry.uses_left -= 1
            entry.holders = 1
            state.used += 1
            return entry
        return None

    def _take_shared(self, state: _Key[T]) -> Entry[T] | None:
        """Lend the key's object, if it has one, without waiting: a worn one goes on being
        lent while its replacement is built, and a check that is due runs beside the callers."""
        entry = state.shared
        if entry is None:
            return None
        if entry.worn(self._clock()):
            if state.building is None and not self._closed:
                self._shared_build(state)  # lands as the key's object, retiring this one
        elif self._check_due(entry) and not entry.checking:
            entry.checking = True
            self._spawn(self._check_shared(state, entry), f"toolkit.pool.check:{self.name}")
        entry.uses_left -= 1
        entry.holders += 1
        return entry

    def _check_due(self, entry: Entry[T]) -> bool:
        """Whether ``health_check`` should run on an object before it is trusted again."""
        return (
            self._health_check is not None and self._clock() - entry.good_at >= self._check_interval
        )

    async def _check_shared(self, state: _Key[T], entry: Entry[T]) -> None:
        """Shared mode, in the background: check the key's object; if it fails, lend it no
        more and build its replacement."""
        try:
            if await self._passes(entry, self._acquire_timeout):
                entry.good_at = self._clock()
            elif not entry.retired:
                self._retire(state, entry, names.POOL_DISCARD_UNHEALTHY)
                if not self._closed:
                    self._shared_build(state)
        finally:
            entry.checking = False

    async def _passes(self, entry: Entry[T], within: float) -> bool:
        """Run the health check within ``within`` seconds; False, an exception or a
        timeout fails it (logged). Cancellation propagates."""
        check = self._health_check
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

    async def _healthy(self, state: _Key[T], entry: Entry[T], deadline: float) -> bool:
        """Exclusive mode: check a taken object within the acquire's time left. A failed
        object is closed and its ``used`` count dropped."""
        try:
            healthy = await self._passes(entry, deadline - self._clock())
        except asyncio.CancelledError:
            # Cancelled mid-check: we cannot know its state; the permit goes back upstream.
            self._drop(state, entry, names.POOL_DISCARD_CANCELLED)
            raise
        if healthy:
            entry.good_at = self._clock()
        else:
            self._drop(state, entry, names.POOL_DISCARD_UNHEALTHY)
        return healthy

    # --- give back ---------------------------------------------------------------------------

    async def _checkin(
        self, state: _Key[T], entry: Entry[T], exc: BaseException | None, held: float
    ) -> None:
        """Take an object back and pass the permit on; reset it first (exclusive)."""
        telemetry = self._telemetry or self._bind()
        telemetry.use_time.record(held, telemetry.attributes)
        if self.shared:
            entry.holders -= 1
            if exc is not None and self._discard_on(exc):
                self._retire(state, entry, names.POOL_DISCARD_ERROR)
            elif entry.retired and entry.holders == 0:
                state.used -= 1
                self._close_later(entry, entry.reason)
            state.gate.leave()
            return
        reason: str | None = None
        if isinstance(exc, asyncio.CancelledError):
            reason = names.POOL_DISCARD_CANCELLED
        elif exc is not None and self._discard_on(exc):
            reason = names.POOL_DISCARD_ERROR
        elif self._reset is not None:
            try:
                result = self._reset(entry.obj)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                self._drop(state, entry, names.POOL_DISCARD_CANCELLED)
                state.gate.leave()
                raise
            except Exception as exc2:
                logger.warning(
                    "pool %r: reset raised %s: %s; the object is closed",
                    self.name,
                    type(exc2).__name__,
                    exc2,
                )
                reason = names.POOL_DISCARD_RESET_FAILED
        if reason is None and self._closed:
            reason = names.POOL_DISCARD_CLOSED
        if reason is None and entry.worn(self._clock()):
            reason = names.POOL_DISCARD_RECYCLED
        if reason is None:
            entry.holders = 0
            entry.good_at = self._clock()
            state.used -= 1
            state.idle.append(entry)
        else:
            self._drop(state, entry, reason)
        state.gate.leave()
        if reason == names.POOL_DISCARD_RECYCLED and state.gate.try_enter():
            # Its replacement is built now, in the background, not on the next caller's path.
            self._adopt(state, self._spawn_build(state))

    def _drop(self, state: _Key[T], entry: Entry[T], reason: str) -> None:
        """Close a lent exclusive object instead of taking it back."""
        state.used -= 1
        entry.holders = 0
        self._close_later(entry, reason)

    def _retire(self, state: _Key[T], entry: Entry[T], reason: str) -> None:
        """Shared mode: lend this object no more; close it once nobody holds it."""
        if entry.retired:
            return
        entry.retired = True
        entry.reason = reason
        if state.shared is entry:
            state.shared = None
        if entry.holders == 0:
            self._close_later(entry, reason)
        else:
            state.used += 1  # held by callers still: counted as used until the last leaves

    # --- builds and closes: tasks the pool owns -----------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: whoever needed it has it, or it was logged

    def _spawn_build(self, state: _Key[T]) -> asyncio.Task[Entry[T]]:
        state.creating += 1  # before the task runs: counted from the moment it exists
        return self._spawn(self._build(state), f"toolkit.pool.build:{self.name}")

    async def _build(self, state: _Key[T]) -> Entry[T]:
        """One factory call, bounded by ``create_timeout`` (this task is the pool's own, so
        the timeout can only cancel the factory)."""
        telemetry = self._telemetry or self._bind()
        try:
            started = self._clock()
            async with asyncio.timeout(self._create_timeout):
                result = self._factory(state.key) if self._takes_key else self._factory()
                if inspect.isawaitable(result):
                    result = await result
            telemetry.create_time.record(self._clock() - started, telemetry.attributes)
            return self._entry(result, state.key)
        finally:
            state.creating -= 1

    def _entry(self, obj: T, key: Hashable) -> Entry[T]:
        settings = self.settings
        jitter = settings.recycle_jitter
        age = settings.recycle_after
        expires = math.inf if age is None else self._clock() + age * (1 - jitter * self._random())
        uses = settings.max_uses
        uses_left = (
            math.inf if uses is None else max(1, math.floor(uses * (1 - jitter * self._random())))
        )
        return Entry(obj, key, expires, uses_left, good_at=self._clock())

    def _adopt(self, state: _Key[T], task: asyncio.Task[Entry[T]]) -> None:
        """Exclusive mode: the caller left while its build runs; the build keeps the permit,
        and its object joins the idle list (or its failure is logged) when it ends."""

        def landed(task: asyncio.Task[Entry[T]]) -> None:
            if task.cancelled():
                pass
            elif (exc := task.exception()) is not None:
                logger.warning(
                    "pool %r: building an object for key %r failed: %s: %s",
                    self.name,
                    state.key,
                    type(exc).__name__,
                    exc,
                )
            elif self._closed:
                self._close_later(task.result(), names.POOL_DISCARD_CLOSED)
            else:
                state.idle.append(task.result())
            state.gate.leave()

        task.add_done_callback(landed)

    def _shared_build(self, state: _Key[T]) -> asyncio.Task[Entry[T]]:
        """Shared mode: the one build of the key's object (single flight)."""
        if state.building is not None:
            return state.building
        task = self._spawn_build(state)
        state.building = task

        def landed(task: asyncio.Task[Entry[T]]) -> None:
            state.building = None
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                logger.warning(
                    "pool %r: building the object for key %r failed: %s: %s",
                    self.name,
                    state.key,
                    type(exc).__name__,
                    exc,
                )
                return
            entry = task.result()
            if self._closed:
                entry.retired = True
                self._close_later(entry, names.POOL_DISCARD_CLOSED)
                return
            old = state.shared
            if old is not None:  # a replacement: the worn object is lent no more
                self._retire(state, old, names.POOL_DISCARD_RECYCLED)
            state.shared = entry

        task.add_done_callback(landed)
        return task

    def _close_later(self, entry: Entry[T], reason: str) -> None:
        """Close the object in a task the pool owns; nobody waits for it."""
        (self._telemetry or self._bind()).discarded(reason)
        self._spawn(self._close_object(entry.obj), f"toolkit.pool.close:{self.name}")

    async def _close_object(self, obj: Any) -> None:
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

    # --- the pool flag off: the path before pooling ---------------------------------------------

    async def _build_direct(self, key: Hashable) -> Any:
        if key is not None and not self._takes_key:
            self._state(key)  # raises the TypeError
        telemetry = self._telemetry or self._bind()
        started = self._clock()
        result = self._factory(key) if self._takes_key else self._factory()
        if inspect.isawaitable(result):
            result = await result
        telemetry.create_time.record(self._clock() - started, telemetry.attributes)
        return result

    async def _close_direct(self, obj: Any) -> None:
        (self._telemetry or self._bind()).discarded(names.POOL_DISCARD_CLOSED)
        await self._close_object(obj)


class _Permit:
    """Whether the acquiring caller still holds its permit (a build may take it over)."""

    __slots__ = ("held",)

    def __init__(self, held: bool) -> None:
        self.held = held


class _Unset(enum.Enum):
    TOKEN = 0


_UNSET: Final = _Unset.TOKEN


class Lease(Generic[T]):
    """``async with pool.acquire(key) as obj``: one use of one object. Single use."""

    __slots__ = ("_direct", "_entry", "_key", "_pool", "_since", "_state")

    def __init__(self, pool: AgentPool[T], key: Hashable) -> None:
        self._pool = pool
        self._key = key
        self._state: _Key[T] | None = None
        self._entry: Entry[T] | None = None
        self._direct: Any = _UNSET
        self._since = 0.0

    async def __aenter__(self) -> T:
        pool = self._pool
        if self._state is not None or self._direct is not _UNSET:
            raise RuntimeError("a Lease is used once: call pool.acquire() again")
        if not pool._enabled():
            obj: T = await pool._build_direct(self._key)
            self._direct = obj
            return obj
        self._state, self._entry = await pool._checkout(self._key)
        self._since = pool._clock()
        return self._entry.obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pool = self._pool
        if self._direct is not _UNSET:
            direct, self._direct = self._direct, None
            await pool._close_direct(direct)
            return
        state, entry = self._state, self._entry
        if state is None or entry is None:
            return
        self._entry = None
        await pool._checkin(state, entry, exc, pool._clock() - self._since)


async def _wait(future: asyncio.Future[Any], within: float) -> bool:
    """Whether ``future`` finished within ``within`` seconds; it is never cancelled here."""
    if not future.done() and within > 0:
        await asyncio.wait((future,), timeout=within)
    return future.done()


def _takes_key(factory: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in parameters
    )


def _discard_predicate(
    discard_on: DiscardOn | _ModeDefault, shared: bool
) -> Callable[[BaseException], bool]:
    if discard_on is MODE_DEFAULT:
        discard_on = () if shared else (Exception,)
    if isinstance(discard_on, tuple):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in discard_on):
            raise ConfigurationError(
                f"AgentPool(discard_on={discard_on!r}): a tuple of exception classes or a "
                "function of the exception, e.g. discard_on=(httpx.TransportError,)"
            )
        types = discard_on
        return lambda exc: isinstance(exc, types)
    if callable(discard_on):
        return discard_on
    raise ConfigurationError(
        f"AgentPool(discard_on={discard_on!r}): a tuple of exception classes or a function "
        "of the exception, e.g. discard_on=(httpx.TransportError,)"
    )


def _warm_plan(
    warm: int | Mapping[Hashable, int] | None, takes_key: bool, settings: PoolSettings, size: int
) -> dict[Hashable, int]:
    if warm is None:
        return {} if takes_key else {None: 1}
    plan: Mapping[Hashable, int] = {None: warm} if isinstance(warm, int) else warm
    if not isinstance(plan, Mapping) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in plan.values()
    ):
        raise ConfigurationError(
            f"AgentPool(warm={warm!r}): a count for the default key, or {{key: count}}, "
            "e.g. warm=2 or warm={'gpt-4o': 2}"
        )
    if None in plan and plan[None] and takes_key:
        pass  # the default key is a key like any other for a factory that takes one
    too_many = {k: n for k, n in plan.items() if n > size}
    if too_many and settings.mode == "exclusive":
        raise ConfigurationError(
            f"AgentPool(warm={warm!r}): more objects than size={size} for "
            f"{list(too_many)}; at most size per key"
        )
    if len(plan) > settings.max_keys:
        raise ConfigurationError(
            f"AgentPool(warm={warm!r}): {len(plan)} keys, more than max_keys="
            f"{settings.max_keys}; raise max_keys or warm fewer keys"
        )
    return {k: n for k, n in plan.items() if n}
