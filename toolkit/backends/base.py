"""What every backend offers: small atomic operations, a bounded call guard, error reporting."""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from opentelemetry import metrics, trace

from toolkit.backends._breaker import BreakerConfig, BreakerView
from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.errors import BackendError
from toolkit.telemetry import names

if TYPE_CHECKING:
    from limits.aio.storage import Storage

T = TypeVar("T")

FLAG_HISTORY_LENGTH: Final = 1000
"""Change records kept per backend."""
FLAGS_CHANNEL: Final = "flags"
"""Where flag changes are announced: the key of the flag that changed."""
CACHE_CHANNEL: Final = "cache"
"""Where cache invalidations are announced: ``{"tags": [...]}``, for in-process copies."""
FOLLOW_MAX_DELAY: Final = 0.5
"""Seconds, at most, between two attempts to subscribe again: a subscription that restarts
is what makes flags live again after an outage, so this bounds how long that takes."""
BREAKER_CHANNEL: Final = "breakers"
"""Where circuit-breaker transitions are announced: ``{"name", "state", "until",
"generation", "forced"}`` as JSON."""


class Backend(abc.ABC):
    """Storage for shared state. The only code in the toolkit that talks to storage.

    Capabilities receive a backend and call its operations; they never import a driver. Every
    operation is atomic, bounded by ``timeout`` and, on failure, raises
    :class:`~toolkit.errors.BackendError` after counting it in ``toolkit.backend.errors`` and
    recording it on the current span. Keys passed in are prefixed with ``key_prefix`` here.

    Args:
        timeout: seconds every call may take before it fails.
        key_prefix: prefix of every key written, so one store can serve several apps.
        meter_provider: where the error counter is created; the global provider when None.
    """

    name: ClassVar[str]
    in_process: ClassVar[bool] = False
    """Whether calls are served inside this process, with no round trip to save."""

    def __init__(
        self,
        *,
        timeout: float,
        key_prefix: str,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.timeout = timeout
        self.key_prefix = key_prefix
        meter = metrics.get_meter(names.INSTRUMENTATION_SCOPE, meter_provider=meter_provider)
        self._errors = names.BACKEND_ERRORS_METRIC.create(meter)

    def key(self, *parts: str) -> str:
        """The storage key for ``parts``, under this backend's prefix."""
        return ":".join((self.key_prefix, *parts))

    async def connect(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Check the backend can be reached. Never raises: an unreachable backend is reported
        and the capabilities serve through their failure path until it returns."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release connections. Safe to call more than once."""

    async def ping(self) -> None:  # noqa: B027 - an in-process backend is always there
        """Reach the storage once; raises BackendError when it cannot."""

    @abc.abstractmethod
    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        """Charge ``cost`` units to every limit, all or nothing (see ``lua/gcra.lua``).

        ``keys`` are unprefixed and, for multi-key calls, share a ``{hash tag}``.
        """

    @abc.abstractmethod
    async def flags_load(self) -> dict[str, str]:
        """Every stored flag override: flag key -> state JSON."""

    @abc.abstractmethod
    async def flags_save(self, key: str, state: str | None, change: dict[str, Any]) -> None:
        """Store (``state``) or clear (None) one override, append ``change`` (plus the old
        state and the time) to the history, and announce the key to every listener; atomic."""

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

    @abc.abstractmethod
    def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published on ``channel`` by every process sharing this backend; first an
        empty message once subscribed (a cue to catch up on what came before).

        Runs until cancelled; raises BackendError when the subscription breaks."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every subscriber of ``channel``, in every process."""

    async def follow(
        self,
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        """Hand every message on ``channel`` to ``on_message``, for ever: the empty one first,
        each time the subscription (re)starts. When it breaks, ``on_lost()``, then subscribe
        again with jittered backoff (50 ms doubling to :data:`FOLLOW_MAX_DELAY`). Run it in a
        task; cancel the task to stop, even if the driver turns the cancellation into an
        error."""
        delay = 0.05
        while True:
            try:
                async for message in self.subscribe(channel):
                    delay = 0.05
                    await on_message(message)
                    _raise_if_cancelling()
            except BackendError:
                _raise_if_cancelling()
                on_lost()
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(FOLLOW_MAX_DELAY, delay * 2)

    # --- cache entries ------------------------------------------------------------------------

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
    async def cache_invalidate(self, tags: Sequence[str]) -> int:
        """Delete every entry filed under any of ``tags``, in every process's view, advance
        the invalidation clock past them (so that values computed before are not stored
        after), and announce it on the ``cache`` channel (for in-process copies); returns
        how many entries were deleted."""

    def cache_stats(self) -> tuple[int, int] | None:
        """``(entries, evictions so far)`` when the backend can tell; None otherwise. A
        backend that must ask a server reports its last reading (see
        :meth:`refresh_cache_stats`)."""
        return None

    async def refresh_cache_stats(self) -> None:  # noqa: B027 - most backends need none
        """Take a new reading for :meth:`cache_stats` from a server; nothing to do for an
        in-process backend. Raises BackendError."""

    # --- leases (cross-process single flight) ---------------------------------------------

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

    # --- circuit breakers (policy in toolkit/resilience; state and arithmetic here) ------------

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
        when its rate passes the threshold (or ``trip``); transitions are announced on the
        ``breakers`` channel. The view carries the window's totals (see
        ``lua/breaker_record.lua``)."""

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
    async def breaker_force(self, name: str, forced: str) -> BreakerView:
        """Set an operator's override (``open``, ``closed``, ``disabled``) or clear it
        (``""``: closed, empty window); announced."""

    @abc.abstractmethod
    async def breaker_read(self, name: str) -> BreakerView:
        """The stored state of breaker ``name``."""

    @abc.abstractmethod
    def limits_storage(self) -> Storage:
        """A storage of the `limits` library backed by this backend, for its strategies."""

    @abc.abstractmethod
    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` (a call into this backend's storage) under the timeout and the error
        policy: driver errors become :class:`~toolkit.errors.BackendError`."""

    def report_error(self, operation: str, error_type: str, exc: BaseException | None) -> None:
        """Count a failed call and put it on the current span as an event."""
        self._errors.add(
            1,
            {
                names.BACKEND_NAME: self.name,
                names.BACKEND_OPERATION: operation,
                names.ERROR_TYPE: error_type,
            },
        )
        span = trace.get_current_span()
        if span.is_recording():
            attributes = {
                names.BACKEND_NAME: self.name,
                names.BACKEND_OPERATION: operation,
                names.ERROR_TYPE: error_type,
            }
            if exc is not None:
                attributes[names.EXCEPTION_TYPE] = type(exc).__qualname__
                attributes[names.EXCEPTION_MESSAGE] = str(exc)
            span.add_event(names.BACKEND_ERROR_EVENT, attributes)


def _raise_if_cancelling() -> None:
    """Honour a cancellation that a driver swallowed during the last await."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def redacted_url(url: str) -> str:
    """``url`` without its credentials, for logs and output."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}"
