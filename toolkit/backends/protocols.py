"""The storage contract, one small protocol per capability.

A capability types its backend against only the protocols it uses and checks them with
:func:`require` when it is wired, so a backend that lacks an operation is refused at startup
with a :class:`~toolkit.errors.ConfigurationError` naming it, never on the first request.

============================  ================================================================
protocol                      used by
============================  ================================================================
:class:`RateLimitStorage`     ``Gcra`` (the default rate-limit algorithm)
:class:`InstantRateLimits`    ``Gcra``, deciding without awaiting (an in-process storage)
:class:`LimitsSupport`        ``LimitsStrategy`` (the strategies of the `limits` library)
:class:`CacheStorage`         ``CacheStore`` (responses, ``@cached``, ``@cache_embeddings``)
:class:`LeaseStorage`         ``SingleFlight`` (one computation per key across the fleet)
:class:`BreakerStorage`       ``CircuitBreaker``, ``BreakerRegistry``
:class:`FlagStorage`          ``FlagStore``
:class:`PubSub`               every capability above that announces (cache, breakers, flags)
============================  ================================================================

Every operation is atomic, bounded by the backend's timeout and, on failure, raises
:class:`~toolkit.errors.BackendError` after counting it. Keys and channels passed in are
unprefixed: the backend adds its ``key_prefix``. Channels are the capability's to name (it
follows them too); the backend only carries the messages.

:class:`~toolkit.backends.Backend` is all of them at once, which both built-in backends are.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.backends.breaker_state import BreakerConfig, BreakerView
from toolkit.errors import ConfigurationError

if TYPE_CHECKING:
    from limits.aio.storage import Storage

T = TypeVar("T")


@runtime_checkable
class BackendInfo(Protocol):
    """What every storage tells about itself."""

    @property
    def name(self) -> str:
        """``memory``, ``redis``: the ``toolkit.backend.name`` of metrics."""
        ...

    @property
    def in_process(self) -> bool:
        """Whether calls are served inside this process, with no round trip to save (and no
        state shared with other processes)."""
        ...


@runtime_checkable
class PubSub(BackendInfo, Protocol):
    """Messages between every process sharing the backend."""

    @abc.abstractmethod
    def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published on ``channel`` by every process sharing this backend; first an
        empty message once subscribed (a cue to catch up on what came before).

        Runs until cancelled; raises BackendError when the subscription breaks."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every subscriber of ``channel``, in every process."""

    @abc.abstractmethod
    async def follow(
        self,
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        on_lost: Callable[[], None] = ...,
    ) -> None:
        """Hand every message on ``channel`` to ``on_message``, for ever, subscribing again
        when the subscription breaks (see :meth:`toolkit.backends.base.BackendCore.follow`)."""


@runtime_checkable
class RateLimitStorage(BackendInfo, Protocol):
    """GCRA in one atomic step (``lua/gcra.lua``; ``toolkit.backends.memory`` in process)."""

    @abc.abstractmethod
    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        """Charge ``cost`` units to every limit, all or nothing, on the storage's clock.

        ``keys`` are unprefixed and, for multi-key calls, share a ``{hash tag}``."""


@runtime_checkable
class InstantRateLimits(RateLimitStorage, Protocol):
    """A :class:`RateLimitStorage` that decides in this process without awaiting (the memory
    backend): the rate limiter then charges a request without a coroutine per call."""

    @abc.abstractmethod
    def gcra_now(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        """:meth:`~RateLimitStorage.gcra`, answered at once."""


@runtime_checkable
class LimitsSupport(BackendInfo, Protocol):
    """A storage of the `limits` library over this backend, for its strategies."""

    @abc.abstractmethod
    def limits_storage(self) -> Storage:
        """The storage, created on first use and kept; closed with the backend."""

    @abc.abstractmethod
    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` (calls into :meth:`limits_storage`) under the backend's timeout and error
        policy: driver errors become :class:`~toolkit.errors.BackendError`."""


@runtime_checkable
class CacheStorage(PubSub, Protocol):
    """Cache entries under tags, with an invalidation clock (``lua/cache_*.lua``;
    :class:`~toolkit.backends._cache_table.CacheTable` in process)."""

    @abc.abstractmethod
    async def cache_get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values stored under ``keys`` (None where missing or expired), in order."""

    @abc.abstractmethod
    async def cache_generation(self) -> int:
        """The invalidation clock now. Read it before computing a value and pass it to
        :meth:`cache_set_many`: the value is then never stored once one of its tags has been
        invalidated after this read."""

    @abc.abstractmethod
    async def cache_set_many(
        self,
        items: Sequence[tuple[str, bytes]],
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        """Store each ``(key, value)`` for ``ttl`` seconds, filed under every tag, and return
        how many were stored. With ``generation`` (from :meth:`cache_generation`), nothing is
        stored if any of ``tags`` was invalidated since: checked in the same atomic step as
        the write (see ``lua/cache_set.lua``). The tag index lists live entries only."""

    @abc.abstractmethod
    async def cache_invalidate(self, tags: Sequence[str], *, channel: str) -> int:
        """Delete every entry filed under any of ``tags``, in every process's view, advance
        the invalidation clock past them (so that values computed before are not stored
        after), and announce ``{"tags": [...]}`` on ``channel`` (for in-process copies);
        returns how many entries were deleted."""

    def cache_stats(self) -> tuple[int, int] | None:
        """``(entries, evictions so far)`` when the backend can tell; None otherwise. A
        backend that must ask a server reports its last reading (see
        :meth:`refresh_cache_stats`)."""
        return None

    async def refresh_cache_stats(self) -> None:
        """Take a new reading for :meth:`cache_stats` from a server; nothing to do for an
        in-process backend. Raises BackendError."""
        return None


@runtime_checkable
class LeaseStorage(BackendInfo, Protocol):
    """Leases with a time to live, held by a token (cross-process single flight)."""

    @abc.abstractmethod
    async def lease_acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease ``key`` for ``ttl`` seconds unless someone holds it."""

    @abc.abstractmethod
    async def lease_renew(self, key: str, token: str, ttl: float) -> bool:
        """Extend the lease to ``ttl`` seconds from now, if ``token`` still holds it."""

    @abc.abstractmethod
    async def lease_release(self, key: str, token: str) -> None:
        """Give the lease up, if ``token`` still holds it."""

    @abc.abstractmethod
    async def lease_held(self, key: str) -> bool:
        """Whether anyone holds the lease ``key``."""


@runtime_checkable
class BreakerStorage(PubSub, Protocol):
    """Circuit-breaker state and its arithmetic (``lua/breaker_*.lua``;
    :class:`~toolkit.backends.breaker_state.BreakerTable` in process). The policy is in
    ``toolkit.resilience``. Every transition is announced on ``config.channel`` (``channel``
    for :meth:`breaker_force`), as :func:`~toolkit.backends.breaker_state.breaker_message`
    writes it."""

    @abc.abstractmethod
    async def breaker_record(
        self,
        name: str,
        now_ms: int,
        successes: int,
        failures: int,
        slow: int,
        trip: bool,
        config: BreakerConfig,
    ) -> BreakerView:
        """Add outcomes of calls made while closed to breaker ``name``'s window and trip it
        when its rate passes the threshold (or ``trip``). The view carries the window's
        totals (see ``lua/breaker_record.lua``)."""

    @abc.abstractmethod
    async def breaker_acquire_probe(
        self, name: str, now_ms: int, token: str, config: BreakerConfig
    ) -> BreakerView:
        """Take a half-open probe permit, ``config.probes`` for every process sharing this
        backend; an open breaker whose period ended goes half-open first. ``granted`` tells."""

    @abc.abstractmethod
    async def breaker_release_probe(
        self,
        name: str,
        now_ms: int,
        token: str,
        generation: int,
        outcome: str,
        config: BreakerConfig,
    ) -> BreakerView:
        """Report a probe's ``success``, ``failure`` or ``ignored`` (cancelled) outcome."""

    @abc.abstractmethod
    async def breaker_force(self, name: str, forced: str, *, channel: str) -> BreakerView:
        """Set an operator's override (``open``, ``closed``, ``disabled``) or clear it
        (``""``: closed, empty window); announced on ``channel``."""

    @abc.abstractmethod
    async def breaker_read(self, name: str) -> BreakerView:
        """The stored state of breaker ``name``."""


@runtime_checkable
class FlagStorage(PubSub, Protocol):
    """Flag overrides, their change history and the fleet's flag declarations."""

    @abc.abstractmethod
    async def flags_load(self) -> dict[str, str]:
        """Every stored flag override: flag key -> state JSON."""

    @abc.abstractmethod
    async def flags_save(
        self,
        key: str,
        state: str | None,
        change: dict[str, Any],
        *,
        channel: str,
        history_length: int,
    ) -> None:
        """Store (``state``) or clear (None) one override, append ``change`` (plus the old
        state and the time) to the history, keeping the newest ``history_length`` records,
        and announce the key on ``channel``; atomic (see ``lua/flags_save.lua``)."""

    @abc.abstractmethod
    async def flags_history(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` change records, newest first."""

    @abc.abstractmethod
    async def flags_declare(self, definitions: dict[str, str]) -> None:
        """Record flag definitions (key -> JSON), so operators' tools know every flag the
        fleet's applications declared, not only their own."""

    @abc.abstractmethod
    async def flags_declared(self) -> dict[str, str]:
        """Every recorded flag definition: key -> JSON."""


def require(backend: object, *protocols: type, user: str) -> None:
    """Check, when ``user`` is wired, that ``backend`` offers every one of ``protocols``;
    raises ConfigurationError naming what is missing."""
    lacking = [p for p in protocols if not isinstance(backend, p)]
    if not lacking:
        return
    missing = sorted(
        {
            member
            for protocol in lacking
            for member in dir(protocol)
            if not member.startswith("_") and not hasattr(backend, member)
        }
    )
    raise ConfigurationError(
        f"{user} needs a backend with {' and '.join(p.__name__ for p in lacking)}; "
        f"{type(backend).__name__} has no {', '.join(missing)}. Pass a backend that offers "
        "them (memory:// and redis:// offer every one)"
    )
