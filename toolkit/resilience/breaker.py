"""CircuitBreaker: stop calling a dependency that is failing, let a few probes find out when
it is back, and agree on it across every instance that shares the backend.

States: ``closed`` (calls pass; outcomes fill a sliding window), ``open`` (calls are refused
at once with :class:`~toolkit.errors.CircuitOpenError` until the open period ends; each trip in
a row doubles the period, up to a cap) and ``half_open`` (exactly ``probes`` calls run, for the
whole fleet; the rest are refused fast; one failed probe opens again, all probes succeeding
closes). Operators can force it open or closed or disable it; shadow mode records and never
refuses.

Where the round trips go (the design, in short):

- A call in the closed state makes **no** backend call. Its outcome is counted in process;
  successes reach the shared window in aggregate, every ``flush_interval`` (piggybacked on the
  next call after it elapses, in the background). A failure is reported at once, with the
  successes counted so far: failures are what can trip a breaker, so they cannot wait; the
  rare failing call pays one round trip, the common successful one pays none.
- An open breaker refuses from its local copy of the state, no round trip, until its open
  period ends; then at most ``probes`` callers per process ask the backend for a fleet-wide
  probe permit (an atomic script), and a caller refused there waits out a short recheck
  instead of asking again at once.
- Every transition is published; instances follow it through :class:`BreakerRegistry`'s
  subscription, and every flush re-reads the state as a safety net. A breaker reads the stored
  state once, before its first call: an instance that starts (or first needs this breaker)
  while the fleet has it open or half-open did not hear the announcement.
- When the backend fails, the breaker keeps deciding from its local copy (the same state
  machine, fed the same counts, starting from the fleet's last known state) and never raises a
  backend error into the call; the next backend call that succeeds brings the fleet's state
  back (:mod:`toolkit.resilience._breaker_store`).

Cancellation (a client disconnect, an outer timeout) is neither a failure nor a success: the
window is untouched and a probe's permit is given back.

Why this module is longer than most: it is one state machine, whose call path, operators and
adoption of views (``_apply``) read and write the same fields, so they stay one class. What
could leave it has: where the state is stored, with the fallback (``_breaker_store``), the
stored state machine (:mod:`toolkit.backends.breaker_state` and its Lua scripts), the
telemetry (``_telemetry``) and the named breakers (``registry``).

Over 400 lines: one state machine (the local copy of the state, the flushing of outcomes, the
probe permits and the fleet's transitions share its fields); its store is apart
(``_breaker_store.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from opentelemetry import metrics

from toolkit._configured import configured
from toolkit._default import DEFAULT, Default
from toolkit._tasks import spawn
from toolkit.backends import BreakerStorage, MemoryBackend, require
from toolkit.backends.breaker_state import (
    CLOSED,
    DISABLED,
    FORCED_CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    NOT_FORCED,
    OPEN,
    PROBE_FAILURE,
    PROBE_IGNORED,
    PROBE_SUCCESS,
    BreakerConfig,
    BreakerView,
)
from toolkit.errors import BackendError, CircuitOpenError, ConfigurationError
from toolkit.resilience._breaker_store import BreakerStore
from toolkit.resilience._nesting import claim, claimed_by
from toolkit.resilience._telemetry import BreakerTelemetry
from toolkit.resilience.classify import ErrorPredicate, counts_as_failure
from toolkit.settings import ResilienceSettings
from toolkit.settings._section import validate_arguments
from toolkit.settings._values import BREAKER_NAME_CHARACTERS
from toolkit.telemetry import names

R = TypeVar("R")

WINDOW_BUCKETS: Final = 10
"""Buckets per sliding window: the window slides in tenths."""
BREAKER_CHANNEL: Final = "breakers"
"""Where transitions are announced: ``{"name", "state", "until", "generation", "forced"}``
as JSON (:func:`~toolkit.backends.breaker_state.breaker_message`)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A half-open probe permit: report its outcome exactly once."""

    token: str
    generation: int
    local: bool


class _Shadow:
    """The permit of a call shadow mode let through although the breaker would refuse it."""

    __slots__ = ()


SHADOW: Final = _Shadow()
Permit = Probe | _Shadow | None
"""What :meth:`CircuitBreaker.admit` returns: None for an ordinary call."""


class CircuitBreaker:
    """A circuit breaker named ``name``; with a shared backend, one state for the fleet.

    Use it through ``@toolkit.resilient(breaker=...)``, ``await breaker.call(fn, ...)``, or
    the low-level ``permit = await breaker.admit()`` then ``await breaker.record_success(
    permit, seconds)`` / ``record_failure(permit, exc, seconds)`` / ``record_cancelled(permit)``.
    Get named ones from a :class:`~toolkit.resilience.BreakerRegistry` (one per provider or
    model) so that instances follow each other's transitions.

    Args:
        name: letters, digits and ``._-:/``; the ``toolkit.circuit_breaker.name`` of metrics.
        backend: where the state lives; an in-process memory backend of its own when None.
            ConfigurationError when it lacks :class:`~toolkit.backends.BreakerStorage`.
        failure_rate: share of failed calls in the window that trips (``0 < x <= 1``).
        minimum_calls: calls in the window before a rate counts.
        window: seconds of the sliding window (time-based, in tenths).
        window_calls: judge the last N calls of this process instead (count-based); a trip
            still opens the breaker for the fleet. None: the time window.
        slow_call_duration: seconds after which a call counts as slow; None: never.
        slow_call_rate: share of slow calls that trips (with ``slow_call_duration``).
        open_duration: first open period; doubled at each trip in a row...
        max_open_duration: ...up to this.
        probes: calls let through in half-open, for the whole fleet.
        failure: which errors count as failures; others are ``ignored``. Default: all but the
            caller's own (a 4xx other than 408/429, validation errors). Never counted: a
            refusal by another breaker, and an error that left a nested ``@resilient`` call
            with a breaker (it is that breaker's).
        shadow: record and change state, never refuse.
        settings: the defaults (``resilience`` settings, with ``resilience.breakers.<name>``
            over them); the built-in ones when None.
        clock: wall-clock seconds (shared states carry times every instance must agree on).
        meter_provider: where the breaker metrics go; the global provider when None.

    Options left at ``DEFAULT`` come from ``settings`` (this breaker's entry first); invalid
    arguments raise ConfigurationError.
    """

    def __init__(
        self,
        name: str,
        *,
        backend: BreakerStorage | None = None,
        failure_rate: float | Default = DEFAULT,
        minimum_calls: int | Default = DEFAULT,
        window: float | str | Default = DEFAULT,
        window_calls: int | None = None,
        slow_call_duration: float | str | None = None,
        slow_call_rate: float = 1.0,
        open_duration: float | str | Default = DEFAULT,
        max_open_duration: float | str | Default = DEFAULT,
        probes: int | Default = DEFAULT,
        failure: ErrorPredicate = counts_as_failure,
        shadow: bool = False,
        settings: ResilienceSettings | None = None,
        clock: Callable[[], float] = time.time,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or not set(name) <= BREAKER_NAME_CHARACTERS:
            raise ConfigurationError(
                f"CircuitBreaker(name={name!r}): letters, digits and ._-:/ only, e.g. 'openai'"
            )
        own = settings.breakers.get(name) if settings is not None else None
        # resilience.breakers.<name> over the section, the arguments over both.
        options = configured(
            "CircuitBreaker",
            ResilienceSettings,
            settings,
            {
                "failure_rate": failure_rate,
                "minimum_calls": minimum_calls,
                "window": window,
                "open_duration": open_duration,
                "max_open_duration": max_open_duration,
                "probes": probes,
            },
            beneath=own.model_dump() if own is not None else None,
        )
        if window_calls is not None and (not isinstance(window_calls, int) or window_calls < 1):
            raise ConfigurationError(
                f"CircuitBreaker(window_calls={window_calls!r}): a positive count, e.g. 100"
            )
        slow = None
        if slow_call_duration is not None:
            slow = validate_arguments(ResilienceSettings, {"window": slow_call_duration}).window
        if not 0 < slow_call_rate <= 1:
            raise ConfigurationError(
                f"CircuitBreaker(slow_call_rate={slow_call_rate!r}): a share in (0, 1], e.g. 0.8"
            )
        if not callable(failure):
            raise ConfigurationError(
                f"CircuitBreaker(failure={failure!r}): a predicate of the exception, e.g. "
                "toolkit.resilience.counts_as_failure"
            )
        if backend is None:
            backend = MemoryBackend()
        require(backend, BreakerStorage, user=f"CircuitBreaker({name!r})")
        self.name = name
        self.backend = backend
        self.settings = options
        self.failure = failure
        self.shadow = shadow
        self.slow_call_duration = slow
        self.window_calls = window_calls
        self._clock = clock
        window_ms = max(WINDOW_BUCKETS, round(options.window * 1000))
        self.config = config = BreakerConfig(
            bucket_ms=window_ms // WINDOW_BUCKETS,
            buckets=WINDOW_BUCKETS,
            minimum_calls=options.minimum_calls,
            failure_rate=options.failure_rate,
            slow_rate=slow_call_rate if slow is not None else 0.0,
            open_ms=round(options.open_duration * 1000),
            max_open_ms=round(max(options.max_open_duration, options.open_duration) * 1000),
            probes=options.probes,
            probe_ttl_ms=round(options.probe_timeout * 1000),
            channel=BREAKER_CHANNEL,
        )
        self._flush_interval = options.flush_interval
        self._recheck = min(1.0, options.open_duration / 10)
        self._store = BreakerStore(name, backend, config)
        self._degraded = False
        self.state = CLOSED
        self.forced = NOT_FORCED
        self._until_ms = 0
        self._generation = 0
        # The stored state is read before the first call goes anywhere: an instance that
        # starts (or first uses this breaker) while the fleet has it open or half-open must
        # not let calls through as if it were closed. One round trip per breaker, ever.
        self._known = False
        self._reading: asyncio.Future[None] | None = None
        self._fast = False
        self._pending_ok = self._pending_failed = self._pending_slow = 0
        # The last window_calls outcomes (failed, slow), for the count-based window.
        self._recent: deque[tuple[bool, bool]] = deque(maxlen=window_calls)
        self._flush_at = clock() + self._flush_interval
        self._probing = 0
        self._recheck_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.telemetry = BreakerTelemetry(name, self, meter_provider)

    def __repr__(self) -> str:
        forced = f", forced={self.forced}" if self.forced else ""
        return f"<CircuitBreaker {self.name!r} {self.state}{forced}>"

    @property
    def degraded(self) -> bool:
        """Whether the breaker decides from local state because the backend failed."""
        return self._degraded

    # --- calls -----------------------------------------------------------------------------

    async def call(self, function: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any) -> R:
        """``await function(*args, **kwargs)`` through the breaker.

        Raises:
            CircuitOpenError: refused without running the function.
        """
        permit = await self.admit()
        started = self._clock()
        try:
            result = await function(*args, **kwargs)
        except asyncio.CancelledError as cancel:
            self.record_cancelled(permit)
            claim(cancel, self.name)
            raise
        except Exception as exc:
            await self.record_failure(permit, exc, self._clock() - started)
            claim(exc, self.name)
            raise
        await self.record_success(permit, self._clock() - started)
        return result

    async def admit(self) -> Permit:
        """Let a call through (None, or a probe permit) or raise CircuitOpenError."""
        if self._fast:
            return None
        if not self._known:
            await self._learn()
            if self._fast:
                return None
        if self.forced == FORCED_OPEN:
            return self._reject(0.0)
        now = self._clock()
        if self.state == OPEN and now * 1000 < self._until_ms:
            return self._reject(self._until_ms / 1000 - now)
        if now < self._recheck_at or self._probing >= self.config.probes:
            return self._reject(max(0.0, self._recheck_at - now))
        self._probing += 1
        token = uuid.uuid4().hex
        try:
            view, local = await self._store.acquire_probe(token, int(now * 1000))
        except asyncio.CancelledError:
            self._probing -= 1
            # The permit may have been granted as we were cancelled: give it back.
            self._spawn(self._release(Probe(token, -1, False), PROBE_IGNORED))
            raise
        self._apply(view, local)
        if view.granted:
            return Probe(token, view.generation, local)
        self._probing -= 1
        self._recheck_at = now + self._recheck
        return self._reject(self._recheck)

    def _reject(self, retry_after: float) -> _Shadow:
        self.telemetry.rejected(shadow=self.shadow)
        if self.shadow:
            return SHADOW
        raise CircuitOpenError(
            f"circuit breaker {self.name!r} is {self.forced and 'forced '}{self.state}; "
            "the call was not made",
            breaker=self.name,
            retry_after=retry_after,
        )

    async def record_success(self, permit: Permit, seconds: float = 0.0) -> None:
        """The call returned normally after ``seconds``."""
        if permit is None:
            if self.forced == DISABLED:
                return
            self.telemetry.call(names.CIRCUIT_SUCCESS)
            self._pending_ok += 1
            slow = self.slow_call_duration is not None and seconds >= self.slow_call_duration
            if slow:
                self._pending_slow += 1
            if self.window_calls is not None and self._judge(False, slow):
                await self._flush(trip=True)
            elif self._clock() >= self._flush_at:
                self._flush_at = self._clock() + self._flush_interval
                self._spawn(self._flush())
        elif isinstance(permit, Probe):
            self.telemetry.call(names.CIRCUIT_SUCCESS)
            await self._finish(permit, PROBE_SUCCESS)

    async def record_failure(
        self, permit: Permit, exc: BaseException, seconds: float = 0.0
    ) -> None:
        """The call raised ``exc`` after ``seconds``: a failure if ``failure(exc)``, else
        ignored; ignored too when another breaker already owns ``exc``."""
        if permit is None and self.forced == DISABLED:
            return
        if claimed_by(exc) is not None or not self.failure(exc):
            self.record_cancelled(permit)
            return
        self.telemetry.call(names.CIRCUIT_FAILURE)
        if permit is None:
            self._pending_failed += 1
            slow = self.slow_call_duration is not None and seconds >= self.slow_call_duration
            if slow:
                self._pending_slow += 1
            trip = self.window_calls is not None and self._judge(True, slow)
            await self._flush(trip=trip)
        elif isinstance(permit, Probe):
            await self._finish(permit, PROBE_FAILURE)

    def record_cancelled(self, permit: Permit) -> None:
        """The call was cancelled (or raised an error that is not a failure): no outcome; a
        probe's permit is given back, in the background."""
        if permit is None and self.forced == DISABLED:
            return
        self.telemetry.call(names.CIRCUIT_IGNORED)
        if isinstance(permit, Probe):
            self._probing -= 1
            self._spawn(self._release(permit, PROBE_IGNORED))

    def _judge(self, failed: bool, slow: bool) -> bool:
        """Count-based window: whether this process's last ``window_calls`` calls trip."""
        recent = self._recent
        recent.append((failed, slow))
        failures = sum(1 for f, _ in recent if f)
        slowed = sum(1 for _, s in recent if s)
        if self.config.trips(len(recent), failures, slowed):
            recent.clear()
            return True
        return False

    async def _finish(self, probe: Probe, outcome: str) -> None:
        self._probing -= 1
        await self._release(probe, outcome)

    # --- operators -------------------------------------------------------------------------

    async def force_open(self) -> None:
        """Refuse every call, on every instance, until :meth:`reset`."""
        await self._force(FORCED_OPEN)

    async def force_closed(self) -> None:
        """Let every call through (still counted, never tripping) until :meth:`reset`."""
        await self._force(FORCED_CLOSED)

    async def disable(self) -> None:
        """Pass every call through untouched and uncounted, until :meth:`reset`."""
        await self._force(DISABLED)

    async def reset(self) -> None:
        """Clear any override: closed, with an empty window."""
        await self._force(NOT_FORCED)

    async def _force(self, forced: str) -> None:
        # Operators see a backend error (the override did not reach the fleet); this
        # instance follows the override anyway.
        try:
            view = await self._store.force(forced)
        except BackendError:
            self._apply(self._store.force_locally(forced), True)
            raise
        self._recent.clear()
        self._apply(view, False)

    async def refresh(self) -> None:
        """Read the stored state (at startup, and after the subscription reconnects)."""
        view, local = await self._store.read()
        if not local:
            self._apply(view, False)

    def follow(self, view: BreakerView) -> None:
        """Apply a transition announced by another instance."""
        if not self._degraded:
            self._apply(view, False)

    async def settle(self) -> None:
        """Wait for this breaker's background reports (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- storage ---------------------------------------------------------------------------

    async def _flush(self, *, trip: bool = False) -> None:
        ok, failed, slow = self._pending_ok, self._pending_failed, self._pending_slow
        self._pending_ok = self._pending_failed = self._pending_slow = 0
        now_ms = int(self._clock() * 1000)
        self._flush_at = self._clock() + self._flush_interval
        self._apply(*await self._store.record(now_ms, ok, failed, slow, trip))

    async def _learn(self) -> None:
        """Read the fleet's state once, for every caller that arrives before it is known."""
        if self._reading is None:
            # In the tasks: settle() waits for it if every caller left.
            self._reading = spawn(self._tasks, self._read_state())
        await asyncio.shield(self._reading)

    async def _read_state(self) -> None:
        self._apply(*await self._store.read())

    async def _release(self, probe: Probe, outcome: str) -> None:
        now_ms = int(self._clock() * 1000)
        view, local = await self._store.release_probe(
            probe.token, probe.generation, outcome, now_ms, local=probe.local
        )
        self._apply(view, local)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; :meth:`settle` waits for it."""
        spawn(self._tasks, work)

    def _apply(self, view: BreakerView, local: bool) -> None:
        """Adopt ``view`` as this instance's state, counting and announcing a transition."""
        self._known = True
        if self._store.shared:
            if not local:
                self._store.adopt(view)
            switched = local != self._degraded
            self._degraded = local
            if not switched and view.generation < self._generation:
                return  # an older view than one already applied (replies can cross)
        elif view.generation < self._generation:
            return
        before, before_forced = self.state, self.forced
        self.state, self.forced = view.state, view.forced
        self._until_ms, self._generation = view.until, view.generation
        self._fast = (view.state == CLOSED and view.forced != FORCED_OPEN) or view.forced in (
            FORCED_CLOSED,
            DISABLED,
        )
        if (before, before_forced) != (view.state, view.forced):
            self._recheck_at = 0.0
            if view.state != before:
                self.telemetry.transition(before, view.state, view.forced)


__all__ = ["BREAKER_CHANNEL", "CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "Permit", "Probe"]
