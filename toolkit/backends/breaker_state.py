"""Circuit-breaker state as stored: the contract between ``toolkit.resilience`` and the backends.

The states, the operators' overrides, what a storage operation is given
(:class:`BreakerConfig`) and returns (:class:`BreakerView`), and how transitions are
announced (:func:`breaker_message`). Times are integer milliseconds of the caller's clock
(wall clock by default, so every instance of a fleet agrees on them).

:class:`BreakerTable` is the state machine in plain Python, step for step the arithmetic of
``lua/breaker_*.lua``. It lives here, beside the scripts it mirrors, rather than in the memory
backend or in ``toolkit.resilience``, because both run it: the memory backend keeps its
breakers in one, and every :class:`~toolkit.resilience.CircuitBreaker` keeps one as its local
fallback while a shared backend is unreachable. A change to the state machine is made here and
in the matching script, and the same test bodies check both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: Final = (CLOSED, OPEN, HALF_OPEN)

FORCED_OPEN: Final = "open"
FORCED_CLOSED: Final = "closed"
DISABLED: Final = "disabled"
NOT_FORCED: Final = ""
FORCED: Final = (NOT_FORCED, FORCED_OPEN, FORCED_CLOSED, DISABLED)

PROBE_SUCCESS: Final = "success"
PROBE_FAILURE: Final = "failure"
PROBE_IGNORED: Final = "ignored"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """What a storage operation needs to decide: the breaker's parameters, in milliseconds.

    Args:
        bucket_ms: width of one window bucket.
        buckets: buckets in the sliding window (window = ``bucket_ms * buckets``).
        minimum_calls: calls in the window before any rate counts.
        failure_rate: share of failed calls that trips (0 < x <= 1).
        slow_rate: share of slow calls that trips; 0 for never.
        open_ms: first open period; each further trip without a close doubles it...
        max_open_ms: ...up to this.
        probes: probe calls in half-open, for the whole fleet.
        probe_ttl_ms: a probe not reported within this is presumed lost (its process died).
        channel: where the storage announces the breaker's transitions (unprefixed).
    """

    bucket_ms: int
    buckets: int
    minimum_calls: int
    failure_rate: float
    slow_rate: float
    open_ms: int
    max_open_ms: int
    probes: int
    probe_ttl_ms: int
    channel: str

    def trips(self, calls: int, failed: int, slowed: int) -> bool:
        """Whether a window of ``calls`` calls, ``failed`` of them failed and ``slowed`` slow,
        trips: it holds ``minimum_calls`` (and at least one), and the failure rate or the
        slow-call rate is reached."""
        if calls < max(1, self.minimum_calls):
            return False
        return failed >= self.failure_rate * calls or (
            self.slow_rate > 0 and slowed >= self.slow_rate * calls
        )

    def args(self) -> list[int | float]:
        """The ``ARGV`` tail every breaker script takes, in this order (the channel goes
        before it, prefixed)."""
        return [
            self.bucket_ms,
            self.buckets,
            self.minimum_calls,
            self.failure_rate,
            self.slow_rate,
            self.open_ms,
            self.max_open_ms,
            self.probes,
            self.probe_ttl_ms,
        ]


class BreakerView(NamedTuple):
    """A breaker's stored state after an operation.

    ``until`` is when an open period ends (ms); ``generation`` grows by one per transition,
    so a late report from an earlier period is recognised; ``calls``/``failures``/``slow``
    are the window's totals (fleet-wide on a shared backend); ``granted`` says whether a probe
    acquisition succeeded.
    """

    state: str
    until: int
    generation: int
    forced: str
    calls: int = 0
    failures: int = 0
    slow: int = 0
    granted: bool = False

    @classmethod
    def from_reply(cls, reply: Sequence[object]) -> BreakerView:
        def text(value: object) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        def number(value: object) -> int:
            return int(text(value))

        return cls(
            text(reply[0]),
            number(reply[1]),
            number(reply[2]),
            text(reply[3]),
            number(reply[4]),
            number(reply[5]),
            number(reply[6]),
            bool(number(reply[7])),
        )


@dataclass(slots=True)
class _Entry:
    state: str = CLOSED
    until: int = 0
    generation: int = 0
    trips: int = 0
    forced: str = NOT_FORCED
    succeeded: int = 0
    window: dict[int, list[int]] = field(default_factory=dict)
    probes: dict[str, int] = field(default_factory=dict)


def _open_for(config: BreakerConfig, trips: int) -> int:
    # Exponential backoff of the open period: a dependency that fails its probes again and
    # again is left alone longer each time, up to the cap.
    return int(min(config.max_open_ms, config.open_ms * 2 ** max(0, trips - 1)))


class BreakerTable:
    """Every breaker's state in this process; each operation runs without awaiting."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        return entry

    def _view(
        self, entry: _Entry, totals: tuple[int, int, int] = (0, 0, 0), granted: bool = False
    ) -> BreakerView:
        return BreakerView(
            entry.state, entry.until, entry.generation, entry.forced, *totals, granted
        )

    def _trip(self, entry: _Entry, config: BreakerConfig, now: int) -> None:
        entry.trips += 1
        entry.state = OPEN
        entry.until = now + _open_for(config, entry.trips)
        entry.generation += 1
        entry.window.clear()
        entry.probes.clear()
        entry.succeeded = 0

    def record(
        self,
        name: str,
        now: int,
        successes: int,
        failures: int,
        slow: int,
        trip: bool,
        config: BreakerConfig,
    ) -> BreakerView:
        """Add outcomes of calls made while closed and decide (see ``breaker_record.lua``)."""
        entry = self._entry(name)
        bucket = now // config.bucket_ms
        if entry.state == CLOSED and (successes or failures or slow):
            counts = entry.window.setdefault(bucket, [0, 0, 0])
            counts[0] += successes + failures
            counts[1] += failures
            counts[2] += slow
        oldest = bucket - config.buckets + 1
        calls = failed = slowed = 0
        for key in list(entry.window):
            if key < oldest:
                del entry.window[key]
            else:
                counts = entry.window[key]
                calls, failed, slowed = calls + counts[0], failed + counts[1], slowed + counts[2]
        closed = entry.state == CLOSED and entry.forced == NOT_FORCED
        if closed and (trip or config.trips(calls, failed, slowed)):
            self._trip(entry, config, now)
            calls = failed = slowed = 0
        return self._view(entry, (calls, failed, slowed))

    def acquire_probe(self, name: str, now: int, token: str, config: BreakerConfig) -> BreakerView:
        """Take one of the half-open probe permits, for the whole fleet (see
        ``breaker_probe.lua``): ``granted`` in the view says whether it was given."""
        entry = self._entry(name)
        if entry.forced != NOT_FORCED:
            return self._view(entry)
        if entry.state == OPEN and now >= entry.until:
            entry.state = HALF_OPEN
            entry.generation += 1
            entry.succeeded = 0
            entry.probes.clear()
        granted = False
        if entry.state == HALF_OPEN:
            for key, expires in list(entry.probes.items()):
                if expires <= now:
                    del entry.probes[key]
            if entry.succeeded + len(entry.probes) < config.probes:
                entry.probes[token] = now + config.probe_ttl_ms
                granted = True
        return self._view(entry, granted=granted)

    def release_probe(
        self, name: str, now: int, token: str, generation: int, outcome: str, config: BreakerConfig
    ) -> BreakerView:
        """Report a probe's outcome (see ``breaker_release.lua``)."""
        entry = self._entry(name)
        held = entry.probes.pop(token, None) is not None
        if entry.state != HALF_OPEN or entry.generation != generation:
            return self._view(entry)
        if outcome == PROBE_FAILURE:
            self._trip(entry, config, now)
        elif outcome == PROBE_SUCCESS and held:
            entry.succeeded += 1
            if entry.succeeded >= config.probes:
                self._close(entry)
        return self._view(entry)

    def _close(self, entry: _Entry) -> None:
        entry.state = CLOSED
        entry.until = 0
        entry.trips = 0
        entry.generation += 1
        entry.succeeded = 0
        entry.window.clear()
        entry.probes.clear()

    def force(self, name: str, forced: str) -> BreakerView:
        """Set (or with ``""`` clear) a manual override; clearing starts closed and empty."""
        entry = self._entry(name)
        entry.forced = forced
        if forced == NOT_FORCED:
            self._close(entry)
        else:
            entry.generation += 1
        return self._view(entry)

    def read(self, name: str) -> BreakerView:
        return self._view(self._entry(name))

    def adopt(self, name: str, view: BreakerView) -> None:
        """Take over a state learnt from the shared backend (before falling back to this)."""
        entry = self._entry(name)
        if (entry.state, entry.generation, entry.forced) != (
            view.state,
            view.generation,
            view.forced,
        ):
            entry.state, entry.until = view.state, view.until
            entry.generation, entry.forced = view.generation, view.forced
            entry.probes.clear()
            entry.succeeded = 0


def breaker_message(name: str, view: BreakerView) -> str:
    """The announcement of a transition, as the scripts publish it."""
    return json.dumps(
        {
            "name": name,
            "state": view.state,
            "until": view.until,
            "generation": view.generation,
            "forced": view.forced,
        }
    )


def parse_breaker_message(message: str) -> tuple[str, BreakerView] | None:
    """``(name, view)`` from an announcement; None for anything else (the subscription cue)."""
    try:
        data = json.loads(message)
        view = BreakerView(
            str(data["state"]), int(data["until"]), int(data["generation"]), str(data["forced"])
        )
        return str(data["name"]), view
    except (ValueError, KeyError, TypeError):
        return None
