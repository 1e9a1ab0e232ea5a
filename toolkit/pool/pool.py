"""AgentPool: expensive objects (agents, clients, sessions, sandboxes) built ahead and lent out.

Sits between a route and what it needs to build per request: the route asks the pool
(``async with pool.acquire(model) as agent``), the pool lends a built object, waits for one
(bounded queue, bounded time) or builds one, and takes it back. ``install(app, pools=[...])``
builds them before the first request and closes them at shutdown.

This module holds what does not depend on the mode: the keys, the permits and the queue, the
lifecycle, the flag and the counts. How a key lends is its ``KeyLender`` (``_lending.py``):
``_exclusive.py`` or ``_shared.py``. The arguments are parsed in ``_options.py``; builds,
checks and closes run in ``_objects.py``; ``lease.py`` is the context manager.

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
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, Unpack, overload

from opentelemetry import metrics, trace

from toolkit._deadlines import time_left
from toolkit._deprecated import renamed_attributes
from toolkit.errors import DeadlineExceeded, PoolExhaustedError, PoolTimeoutError
from toolkit.flags import BOOLEAN, ON, POOL, FlagDefinition, FlagSource, current_flags
from toolkit.flags._registry import REGISTRY
from toolkit.pool._entry import Entry
from toolkit.pool._exclusive import ExclusiveLender
from toolkit.pool._lending import KeyLender, Permit
from toolkit.pool._objects import Objects
from toolkit.pool._options import OLD_NAMES, PoolArguments, parse_options, signature
from toolkit.pool._shared import SharedLender
from toolkit.pool.lease import Lease
from toolkit.telemetry import names

__all__ = ["CLOSE_TIMEOUT", "AgentPool", "Lease", "PoolStats"]

__getattr__ = renamed_attributes(__name__, OLD_NAMES)  # MODE_DEFAULT, DEFAULTS: deprecated

T = TypeVar("T")

CLOSE_TIMEOUT: Final = 5.0
"""Seconds :meth:`AgentPool.close` waits for builds to stop and objects to close."""


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
        size: per key, objects (exclusive; 8 by default) or callers at once (shared; no
            bound by default).
        max_keys: keys kept at once; idle keys are evicted past it, busy ones refused.
        max_waiting: per key, callers that may queue; 0 refuses as soon as all are lent.
        acquire_timeout: seconds (or ``"5s"``) an acquire may take, waiting and building;
            the current deadline (a request's, ``toolkit.deadline``) still holds when sooner,
            and an acquire it cuts raises ``DeadlineExceeded`` instead of ``PoolTimeoutError``.
        create_timeout: seconds one factory call may take: the build's own deadline, in
            place of its caller's (the build outlives a caller that stops waiting); a caller
            waiting for a build cancelled at it gets ``PoolTimeoutError`` naming it.
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
            the caller's block; by default ``(Exception,)`` exclusive, ``()`` shared.
        warm: objects to build at :meth:`start`: a count for the default key (``None``), or
            ``{key: count}``; by default one for the default key when the factory takes no
            key, nothing otherwise. In shared mode any count builds the key's one object.
        flags: where the ``pool`` flag is read; the current flag store when None.
        meter_provider / tracer_provider: for its metrics and spans; those given to
            :meth:`start` (``install()`` passes the app's), else the global ones, when None.
        clock: monotonic seconds, for ages and timings (tests pass a fake one).
        random: returns a float in [0, 1), for the jitter.

    Options shown as ``DEFAULT`` depend on the mode or the factory, as said above.

    Raises:
        ConfigurationError: at construction, for an invalid argument.
    """

    @overload
    def __init__(
        self: AgentPool[T],
        factory: Callable[..., Awaitable[T]],
        **arguments: Unpack[PoolArguments[T]],
    ) -> None: ...

    @overload
    def __init__(
        self: AgentPool[T], factory: Callable[..., T], **arguments: Unpack[PoolArguments[T]]
    ) -> None: ...

    def __init__(
        self, factory: Callable[..., Any], **arguments: Unpack[PoolArguments[Any]]
    ) -> None:
        options = parse_options(factory, arguments)
        self.name = options.name
        self.settings = options.settings
        self.flag = options.flag
        """This pool's own switch, under the global ``pool`` one."""
        REGISTRY.declare(
            FlagDefinition(self.flag, BOOLEAN, ON, f"Agent pool {self.flag[5:]}.", capability=True)
        )
        self._options = options
        self._strategy: type[KeyLender[T]] = (
            SharedLender if options.settings.mode == "shared" else ExclusiveLender
        )
        self._objects: Objects[T] = Objects(options, self._counts)
        self._flags = options.flags
        self._clock = options.clock
        self._keys: dict[Hashable, KeyLender[T]] = {}
        self._started = False

    __init__.__signature__ = signature()  # type: ignore[attr-defined]  # for help(), inspect

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
        if self._objects.telemetry is None:
            self._objects.bind(meter_provider, tracer_provider)
        builds = [
            build
            for key, count in self._options.warm.items()
            for build in self._state(key).warm(count)
        ]
        if builds:
            await asyncio.wait(builds)

    async def close(self) -> None:
        """Lend nothing more: queued callers get PoolClosedError, idle objects are closed,
        builds are cancelled, lent objects are closed when given back. Waits up to
        :data:`CLOSE_TIMEOUT` seconds for the closing to finish. Called at shutdown."""
        objects = self._objects
        objects.closed = True
        error = objects.closed_error()
        for lender in self._keys.values():
            lender.gate.fail_waiters(error)
            lender.drain(names.POOL_DISCARD_CLOSED)
        await objects.stop(CLOSE_TIMEOUT)

    def stats(self) -> PoolStats:
        """The pool's counts now, over every key."""
        idle = used = creating = pending = holders = 0
        for lender in self._keys.values():
            gate = lender.gate
            creating += lender.creating
            pending += len(gate.waiters)
            holders += gate.size - gate.free
            key_idle, key_used = lender.counts()
            idle += key_idle
            used += key_used
        return PoolStats(idle, used, creating, pending, holders)

    # --- acquire -----------------------------------------------------------------------------

    def acquire(self, key: Hashable = None) -> Lease[T]:
        """An object for ``key`` (the default key when None), as an async context manager:

            async with pool.acquire("gpt-4o") as agent:
                ...

        Raises (on entry): PoolExhaustedError (queue full), PoolTimeoutError (past
        ``acquire_timeout``, or the build it waited for past ``create_timeout``),
        PoolClosedError, or the factory's own exception."""
        return Lease(self, key)

    def _state(self, key: Hashable) -> KeyLender[T]:
        """The key's lender, made (after evicting an idle key past ``max_keys``) if new."""
        now = self._clock()
        lender = self._keys.get(key)
        if lender is None:
            if key is not None and not self._options.takes_key:
                raise self._takes_no_key(key)
            max_keys = self.settings.max_keys
            if len(self._keys) >= max_keys and not self._evict_idle_key():
                self._objects.instruments().refused(names.POOL_TOO_MANY_KEYS)
                raise PoolExhaustedError(
                    f"pool {self.name!r}: all max_keys={max_keys} keys are in use; a "
                    f"new key ({key!r}) waits until one is idle. Keys taken from requests "
                    "unchecked grow without bound: map them onto a known set",
                    pool=self.name,
                )
            lender = self._keys[key] = self._strategy(self._objects, key, now)
        lender.last_used = now
        return lender

    def _takes_no_key(self, key: Hashable) -> TypeError:
        return TypeError(
            f"pool {self.name!r}: acquire({key!r}) passes a key, but its factory "
            "takes none; give the factory a parameter (def make(key): ...)"
        )

    def _evict_idle_key(self) -> bool:
        """Make room for a key: close the least recently used idle key's objects and forget
        it. False when every key is busy."""
        idle = [lender for lender in self._keys.values() if not lender.busy()]
        if not idle:
            return False
        lender = min(idle, key=lambda lender: lender.last_used)
        del self._keys[lender.key]
        lender.drain(names.POOL_DISCARD_EVICTED)
        return True

    def _counts(self) -> tuple[int, int, int]:
        stats = self.stats()
        return stats.idle, stats.used, stats.pending

    def _enabled(self) -> bool:
        flags = self._flags or current_flags()
        return flags.is_enabled(POOL) and flags.is_enabled(self.flag)

    async def _checkout(self, key: Hashable) -> tuple[KeyLender[T], Entry[T]]:
        """Take a permit and an object; see the module docstring for the invariants."""
        objects = self._objects
        if objects.closed:
            raise objects.closed_error()
        telemetry = objects.telemetry or objects.bind()
        lender = self._state(key)
        started = self._clock()
        if lender.gate.try_enter():
            # The common case, with no await: a good object is there, nothing to check.
            entry = lender.take()
            if entry is not None:
                telemetry.wait_time.record(self._clock() - started, telemetry.attributes)
                return lender, entry
            return await self._checkout_slow(lender, started, held=True)
        return await self._checkout_slow(lender, started, held=False)

    async def _checkout_slow(
        self, lender: KeyLender[T], started: float, *, held: bool
    ) -> tuple[KeyLender[T], Entry[T]]:
        """Queue for a permit unless one is ``held``, then let the lender wait for a check
        or a build; a permit taken is given back on every way out but success."""
        objects = self._objects
        telemetry = objects.instruments()
        # The smaller of acquire_timeout and the current deadline (a request's, a branch's):
        # an acquire cut by the latter ends in DeadlineExceeded, answered 504, not 503.
        left = time_left()
        bounded_by_work = left is not None and left < self.settings.acquire_timeout
        timeout = left if left is not None and bounded_by_work else self.settings.acquire_timeout
        deadline = started + timeout
        permit = Permit(held)
        error_type: str | None = None
        try:
            if bounded_by_work and timeout <= 0:
                raise DeadlineExceeded(f"pool {self.name!r}: no time left to wait for an object")
            if not permit.held:
                max_waiting = self.settings.max_waiting
                if len(lender.gate.waiters) >= max_waiting:
                    error_type = names.POOL_QUEUE_FULL
                    telemetry.refused(error_type)
                    raise PoolExhaustedError(
                        f"pool {self.name!r}: all {self._options.size} in use and "
                        f"{max_waiting} callers already waiting",
                        pool=self.name,
                    )
                if not await lender.gate.wait(deadline - self._clock()):
                    raise objects.timed_out("waiting for room")
                permit.held = True
            return lender, await lender.checkout(deadline, permit)
        except PoolTimeoutError as exc:
            error_type = names.POOL_TIMEOUT
            if exc.setting == "create_timeout":
                # The build's own timeout, raised in its task: counted here, on our span.
                # Never turned into DeadlineExceeded: a build past create_timeout is the pool's.
                telemetry.timed_out(names.POOL_PHASE_BUILD)
            elif bounded_by_work:  # a wait the deadline cut (counted where it was raised)
                raise DeadlineExceeded(
                    f"pool {self.name!r}: the deadline of this work passed after {timeout:.3g}s "
                    "of waiting, under acquire_timeout"
                ) from exc
            raise
        except asyncio.CancelledError:
            error_type = "cancelled"
            raise
        except BaseException as exc:
            error_type = error_type or type(exc).__qualname__
            raise
        finally:
            if permit.held and error_type is not None:
                lender.gate.leave()
            telemetry.waited(self._clock() - started, error_type)

    # --- the pool flag off: the path before pooling ---------------------------------------------

    async def _build_direct(self, key: Hashable) -> T:
        if key is not None and not self._options.takes_key:
            raise self._takes_no_key(key)
        return await self._objects.make(key)

    async def _close_direct(self, obj: T) -> None:
        objects = self._objects
        objects.instruments().discarded(names.POOL_DISCARD_CLOSED)
        await objects.close_object(obj)
