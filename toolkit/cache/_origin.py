"""A miss of the response cache: one caller in the fleet runs the app, the others take what it
stores.

The leader holds the single flight's lease while the app runs; its response streams to its
client as it is produced and is stored afterwards if it may be (see :class:`Capture`). The
others wait for it and go on the moment the response is stored, or known not to be. A leader
whose response may not be stored by its nature (a Set-Cookie, a size over the cap) notes so
beside the key, so that after :data:`REFUSALS_BEFORE_PASSING` such leaders the callers stop
queueing and go to the app side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from toolkit._fallback import Computation, computing
from toolkit.cache._asgi import HIT, STALE, send_entry
from toolkit.cache._capture import Capture
from toolkit.cache._entry import NAME, Entry, encode, encode_pass, readable
from toolkit.cache._reads import generation_or_none
from toolkit.cache._routes import Route
from toolkit.cache._singleflight import SingleFlight, Turn
from toolkit.cache._store import CacheStore
from toolkit.errors import BackendError
from toolkit.telemetry import names

PASS_TTL: Final = 10.0
"""Seconds a key's note that a leader's response could not be stored is kept (at most the
route's ttl); see :data:`REFUSALS_BEFORE_PASSING`."""
REFUSALS_BEFORE_PASSING: Final = 2
"""Leaders in a row whose responses could not be stored by their nature (a Set-Cookie, a
size over the cap) that a caller waits for; after them it goes to the origin itself instead
of queueing behind the next one. After one, the next caller leads: its response may well
be stored (a CSRF cookie is set only for clients that have none)."""


class Outcome:
    """What a single flight returns other than an entry."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


SERVED: Final = Outcome("served")
"""This caller led: the origin answered it."""
PASS: Final = Outcome("pass")
"""Leaders in a row could not store their responses: go to the origin without waiting."""

Flight = SingleFlight[Entry | Outcome]


class Origin:
    """Runs the app for the response cache, and stores what may be stored.

    Args:
        app: the app behind the cache.
        store: where entries are read and stored.
        flight: coalesces the misses of a key across the fleet.
        max_body: the size cap of a stored response, in body bytes.
        clock: wall-clock seconds, shared by processes (``stored_at``).
    """

    __slots__ = ("_app", "_clock", "_flight", "_max_body", "_store")

    def __init__(
        self,
        app: ASGIApp,
        store: CacheStore,
        flight: Flight,
        *,
        max_body: int,
        clock: Callable[[], float],
    ) -> None:
        self._app = app
        self._store = store
        self._flight = flight
        self._max_body = max_body
        self._clock = clock

    async def miss(
        self, route: Route, key: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One caller in the fleet runs the app; the others take what it stores, or raise
        ``DeadlineExceeded`` when the current deadline passes first."""
        refusals_key = _refusals_key(key)
        try:
            last_refusal = await self._store.get(refusals_key)
        except BackendError:
            last_refusal = None
        refusals = 0

        async def lookup() -> Entry | Outcome | None:
            nonlocal last_refusal, refusals
            try:
                raw, refusal = await self._store.get_many([key, refusals_key])
            except BackendError:
                return None
            entry = None if raw is None else readable(raw)
            if (
                entry is not None
                and not entry.is_pass
                and self._clock() - entry.stored_at < entry.ttl + entry.stale
            ):
                return entry
            if refusal is not None and refusal != last_refusal:
                # A leader we waited for could not store its response, by its nature.
                last_refusal = refusal
                refusals += 1
                if refusals >= REFUSALS_BEFORE_PASSING:
                    return PASS
            return None

        miss = names.CACHE_MISS

        def gave_up(reason: str) -> None:
            nonlocal miss
            miss = reason  # a miss after a wait cut short: which bound ran out
            if reason == names.CACHE_WAIT_DEADLINE:
                # The flight raises DeadlineExceeded (answered 504) and the app is not run:
                # the decision is counted here, since run() never will.
                self._store.record(NAME, reason, key)

        async def compute(turn: Turn | None) -> Entry | Outcome:
            await self.run(route, key, scope, receive, send, turn, miss=miss)
            return SERVED

        result = await self._flight.run_turn(key, lookup, compute, gave_up=gave_up)
        if result is SERVED:
            return
        if isinstance(result, Outcome):  # PASS: the origin, side by side with the others
            await self.run(route, key, scope, receive, send, None)
            return
        age = self._clock() - result.stored_at
        fresh = age < result.ttl
        self._store.record(NAME, names.CACHE_HIT if fresh else names.CACHE_STALE, key)
        scope["route"] = route.label
        await send_entry(send, result, HIT if fresh else STALE, age)

    async def run(
        self,
        route: Route,
        key: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        turn: Turn | None,
        *,
        miss: str = names.CACHE_MISS,
    ) -> None:
        """Run the app for this caller, streaming as it goes, and store what may be stored.
        A leader's ``turn`` ends the moment its response is stored or known not to be;
        ``miss`` is the result counted (a follower's wait cut short says why)."""

        async def refused(passes: bool) -> None:
            if turn is None:
                return
            if passes:  # its own doing: noted, so that the others stop queueing after two
                await self._note_refusal(route, key)
            await turn.end()

        capture = Capture(
            send,
            statuses=route.statuses,
            accepted_vary=route.accepted_vary,
            limit=self._max_body,
            on_refused=refused,
        )
        async with capture:
            try:
                # A tagged route reads the invalidation clock before the app runs: its response
                # is refused if one of its tags is invalidated meanwhile.
                generation = await generation_or_none(self._store) if route.tags else None
                with computing() as computation:
                    await self._app(scope, receive, capture)
                if _keeps(route, capture, computation, generation):
                    await self._keep(route, key, capture, generation)
            finally:
                # A response refused mid-stream (too large) has said MISS already: counted as
                # what it turned out to be.
                result = miss if capture.refused is None else names.CACHE_BYPASS
                self._store.record(NAME, result, key)
                if turn is not None:
                    await turn.end()  # before the rest reaches a client that may read slowly

    async def replay(
        self, route: Route, key: str, scope: Scope, receive: Receive, within: float
    ) -> None:
        """Run the app for the cache only (no client: a refresh), for at most ``within``
        seconds, and store the response if it may be stored; else nothing changes."""
        capture = Capture(
            None,
            statuses=route.statuses,
            accepted_vary=route.accepted_vary,
            limit=self._max_body,
        )
        generation = await generation_or_none(self._store) if route.tags else None  # see run()
        with computing() as computation:
            async with asyncio.timeout(within):
                await self._app(scope, receive, capture)
        if _keeps(route, capture, computation, generation):
            await self._keep(route, key, capture, generation)

    async def _keep(self, route: Route, key: str, capture: Capture, generation: int | None) -> None:
        value = encode(
            capture.status,
            capture.headers,
            b"".join(capture.chunks),
            self._clock(),
            route.ttl,
            route.stale,
            [len(chunk) for chunk in capture.chunks],
        )
        with contextlib.suppress(BackendError):  # counted and traced by the backend
            await self._store.set(key, value, route.ttl + route.stale, route.tags, generation)

    async def _note_refusal(self, route: Route, key: str) -> None:
        """Note, beside the key (never in its place), that a response could not be stored."""
        ttl = min(route.ttl, PASS_TTL)
        with contextlib.suppress(BackendError):
            await self._store.set(_refusals_key(key), encode_pass(self._clock(), ttl), ttl)


def _keeps(
    route: Route, capture: Capture, computation: Computation, generation: int | None
) -> bool:
    """Whether to store the response: storable, not a fallback's answer (an outage's canned
    reply would outlive the outage), and for a tagged route read against the invalidation
    clock."""
    return (
        capture.storable and not computation.fallback and (generation is not None or not route.tags)
    )


def _refusals_key(key: str) -> str:
    """Where the last refusal of ``key``'s responses is noted."""
    return f"pass:{key}"
