"""Stale-while-revalidate: a stale entry is served at once while one caller in the fleet
replays its request through the app in the background and stores the new response."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Final

from starlette.types import Scope

from toolkit.backends import CacheStorage
from toolkit.cache._asgi import one_request
from toolkit.cache._entry import Entry, readable
from toolkit.cache._origin import SERVED, Flight, Origin, Outcome
from toolkit.cache._routes import Route
from toolkit.errors import BackendError

logger = logging.getLogger("toolkit.cache")

MAX_REFRESHES: Final = 64
"""Background refreshes (stale-while-revalidate) running at once per process; past it, a
stale entry is served without starting another, and refreshed on a later request."""


class Refreshes:
    """The background refreshes of one response cache, at most :data:`MAX_REFRESHES` at once
    and one per key in this process; cancelled by :meth:`aclose`.

    Args:
        origin: runs the app and stores the new response.
        flight: one refresh of a key in the whole fleet.
        backend: where the entry is read again before refreshing.
        wait: seconds a refresh may take; a slower one leaves the stale entry to expire.
        clock: wall-clock seconds, shared by processes (freshness).
    """

    __slots__ = ("_backend", "_clock", "_flight", "_origin", "_wait", "running")

    def __init__(
        self,
        origin: Origin,
        flight: Flight,
        backend: CacheStorage,
        *,
        wait: float,
        clock: Callable[[], float],
    ) -> None:
        self._origin = origin
        self._flight = flight
        self._backend = backend
        self._wait = wait
        self._clock = clock
        self.running: dict[str, asyncio.Task[None]] = {}
        """Key -> its refresh, while it runs."""

    def start(self, route: Route, key: str, scope: Scope, body: bytes | None) -> None:
        """Start refreshing ``key`` in the background, unless this process already is."""
        if key in self.running or len(self.running) >= MAX_REFRESHES:
            return
        request = dict(scope)
        state = scope.get("state")
        if isinstance(state, dict):
            request["state"] = dict(state)
        # A context of its own: the refresh outlives this request, its span and flag snapshot.
        task = asyncio.get_running_loop().create_task(
            self._refresh(route, key, request, body),
            name="toolkit.cache.refresh",
            context=contextvars.Context(),
        )
        self.running[key] = task
        task.add_done_callback(lambda _: self.running.pop(key, None))

    async def aclose(self) -> None:
        """Cancel the refreshes running, waiting a little for them to end."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _refresh(self, route: Route, key: str, scope: Scope, body: bytes | None) -> None:
        """Replay the request through the app and store the new response, if no one in the
        fleet is doing it already. Bounded by ``wait``; a failure leaves the stale entry to
        expire."""

        async def fresh() -> Entry | None:
            # Another process may have refreshed it while we waited for the lease; read the
            # backend itself, not a local copy that may be the stale entry.
            found = (await self._backend.cache_get_many([key]))[0]
            entry = None if found is None else readable(found)
            if entry is None or self._clock() - entry.stored_at >= entry.ttl:
                return None
            return entry

        async def compute() -> Outcome:
            # Stored if it may be; else the stale entry serves on, until it expires.
            await self._origin.replay(route, key, scope, one_request(body or b""), self._wait)
            return SERVED

        try:
            await self._flight.run_if_idle(key, compute, fresh)
        except BackendError:
            pass  # counted and traced by the backend; the stale entry serves until it expires
        except Exception:
            logger.warning("refreshing a stale response of %s failed", route.pattern, exc_info=True)
