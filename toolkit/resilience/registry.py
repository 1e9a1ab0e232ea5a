"""Named breakers (one per provider or model) that follow each other across instances."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from opentelemetry import metrics

from toolkit._current import Current
from toolkit._deprecated import keyword_only
from toolkit._tasks import STOP_TIMEOUT, stop_tasks
from toolkit.backends import BreakerStorage, MemoryBackend, require
from toolkit.backends._following import start_following
from toolkit.backends.breaker_state import parse_breaker_message
from toolkit.resilience.breaker import BREAKER_CHANNEL, CircuitBreaker
from toolkit.settings import ResilienceSettings

logger = logging.getLogger("toolkit.resilience")


class BreakerRegistry:
    """Breakers by name, over one backend, with the ``resilience`` settings as defaults.

    ``registry.get("openai")`` returns the same breaker every time (created on first use, with
    any keyword arguments of :class:`CircuitBreaker`); ``@toolkit.resilient(breaker="openai")``
    asks the current registry. Started, it subscribes to the backend's breaker announcements so
    a transition decided by any instance reaches this one within a round trip.

    Args:
        backend: where breaker state lives; an in-process memory backend of its own when
            None. ConfigurationError when it lacks :class:`~toolkit.backends.BreakerStorage`.
        settings: the defaults of every breaker (and ``breakers``, per name); the built-in
            ones when None.
        meter_provider: where breaker metrics go; the global provider when None.
    """

    @keyword_only("BreakerRegistry", "settings")
    def __init__(
        self,
        backend: BreakerStorage | None = None,
        *,
        settings: ResilienceSettings | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        if backend is None:
            backend = MemoryBackend()
        require(backend, BreakerStorage, user="BreakerRegistry")
        self.backend = backend
        self.settings = settings if settings is not None else ResilienceSettings.model_validate({})
        self._meter_provider = meter_provider
        self._breakers: dict[str, CircuitBreaker] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def meter_provider(self) -> metrics.MeterProvider | None:
        """Where the metrics of breakers and ``@resilient`` retries go (None: the global)."""
        return self._meter_provider

    def get(self, name: str, **options: Any) -> CircuitBreaker:
        """The breaker ``name``, created with ``options`` the first time it is asked for;
        ``resilience.breakers.<name>`` gives its settings where ``options`` does not."""
        breaker = self._breakers.get(name)
        if breaker is None:
            options.setdefault("settings", self.settings)
            options.setdefault("meter_provider", self._meter_provider)
            breaker = self._breakers[name] = CircuitBreaker(name, backend=self.backend, **options)
        return breaker

    def __iter__(self) -> Any:
        return iter(list(self._breakers.values()))

    async def start(self) -> None:
        """Follow transitions announced by every instance (``install()``'s startup); returns
        once the subscription is live, or its first attempt failed."""
        if self._task is None:
            self._task = await start_following(
                self.backend,
                BREAKER_CHANNEL,
                self._on_announcement,
                name="toolkit.resilience.follow",
            )

    async def stop(self) -> None:
        """Stop following, and wait for the breakers' background reports (bounded)."""
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
        for breaker in self:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await breaker.settle()

    async def _on_announcement(self, message: str) -> None:
        parsed = parse_breaker_message(message) if message else None
        if parsed is None:
            # Subscribed (again): catch up on what was announced meanwhile.
            for breaker in self:
                await breaker.refresh()
            return
        breaker = self._breakers.get(parsed[0])
        if breaker is not None:
            breaker.follow(parsed[1])


INSTALLED: Current[BreakerRegistry] = Current(BreakerRegistry)
"""The registry ``install()`` set up last, else an in-process one."""


def current_breakers() -> BreakerRegistry:
    """The registry set with :func:`set_current_breakers` (``install()``), else an in-process
    one created on first use, so named breakers work before and without ``install()``."""
    return INSTALLED.get()


def set_current_breakers(registry: BreakerRegistry | None) -> None:
    """Make ``registry`` the one ``@resilient(breaker="name")`` uses."""
    INSTALLED.set(registry)
