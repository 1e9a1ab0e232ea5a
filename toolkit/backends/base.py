"""What every backend is: a connection core (lifecycle, call guard, error reporting, key
prefix, pub/sub), and :class:`Backend`, the core with every capability of
:mod:`toolkit.backends.protocols`."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar, Final, TypeVar

from opentelemetry import metrics, trace

from toolkit._deprecated import moved_attributes
from toolkit._random import RANDOM
from toolkit._tasks import raise_if_cancelling
from toolkit.backends.protocols import (
    BreakerStorage,
    CacheStorage,
    FlagStorage,
    LeaseStorage,
    LimitsSupport,
    PubSub,
    RateLimitStorage,
)
from toolkit.errors import BackendError
from toolkit.telemetry import names

T = TypeVar("T")

FOLLOW_MAX_DELAY: Final = 0.5
"""Seconds, at most, between two attempts to subscribe again: a subscription that restarts
is what makes flags live again after an outage, so this bounds how long that takes."""


class BackendCore(PubSub, abc.ABC):
    """The part of a backend every capability relies on: connecting and closing, the call
    guard, error reporting, key prefixing and pub/sub. Each capability's operations come on
    top, from a protocol of :mod:`toolkit.backends.protocols`.

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

    async def connect(self) -> None:  # optional hook: nothing to do by default
        """Check the backend can be reached. Never raises: an unreachable backend is reported
        and the capabilities serve through their failure path until it returns."""

    async def close(self) -> None:  # optional hook: nothing to do by default
        """Release connections. Safe to call more than once."""

    async def ping(self) -> None:  # an in-process backend is always there
        """Reach the storage once; raises BackendError when it cannot."""

    async def follow(
        self,
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        """Hand every message on ``channel`` to ``on_message``, for ever: the empty one first,
        each time the subscription (re)starts. When it breaks, ``on_lost()``, then subscribe
        again with jittered backoff (50 ms doubling to :data:`FOLLOW_MAX_DELAY`). Run it in a
        task (``toolkit.backends._following.start_following``); cancel the task to stop, even
        if the driver turns the cancellation into an error."""
        delay = 0.05
        while True:
            try:
                async for message in self.subscribe(channel):
                    delay = 0.05
                    await on_message(message)
                    raise_if_cancelling()
            except BackendError:
                raise_if_cancelling()
                on_lost()
            await asyncio.sleep(delay * (0.5 + RANDOM.random() / 2))
            delay = min(FOLLOW_MAX_DELAY, delay * 2)

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


class Backend(
    BackendCore,
    RateLimitStorage,
    LimitsSupport,
    CacheStorage,
    LeaseStorage,
    BreakerStorage,
    FlagStorage,
):
    """Storage for shared state with every capability: what ``install()`` wires to rate
    limits, caches, breakers and flags at once. ``memory://`` and ``redis://`` are such
    backends. A backend for fewer capabilities subclasses :class:`BackendCore` and the
    protocols it offers; each capability checks for its own when it is wired."""


def redacted_url(url: str) -> str:
    """``url`` without its credentials, for logs and output."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}"


# Policy constants that lived here, now with the capability that owns them.
__getattr__ = moved_attributes(
    __name__,
    {
        "FLAG_HISTORY_LENGTH": "toolkit.flags._store",
        "FLAGS_CHANNEL": "toolkit.flags._store",
        "CACHE_CHANNEL": "toolkit.cache._store",
        "BREAKER_CHANNEL": "toolkit.resilience.breaker",
    },
)
