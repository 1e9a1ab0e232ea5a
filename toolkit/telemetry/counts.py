"""Counters kept in a dict on the hot path and handed to OpenTelemetry when it collects.

A synchronous OpenTelemetry ``add()`` cleans, hashes and aggregates its attributes on every
call (about 5 µs in the Python SDK); a request-path counter with a handful of fixed attribute
sets does not need that. Asynchronous (observable) instruments are the SDK's own answer: the
application keeps the totals, the SDK reads them at collection time. One store exists per
meter and metric, since the SDK keeps only the first callbacks of an instrument registered
twice (two apps in one process, one provider).

Every capability counts through here, from the metric's record in ``names.py``::

    decisions = shared_counts(meter, names.RATE_LIMIT_REQUESTS_METRIC)
    decisions.add((policy, result), attributes)  # per request: a dict update
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from toolkit.telemetry.metric import Callback, ObservedMetric

_stores: weakref.WeakKeyDictionary[Meter, dict[str, Counts]] = weakref.WeakKeyDictionary()
_callbacks: weakref.WeakKeyDictionary[Meter, dict[str, list[Callback]]] = (
    weakref.WeakKeyDictionary()
)


class Counts:
    """Running totals per attribute set; ``add`` is a dict update."""

    __slots__ = ("_attributes", "_before", "_totals")

    def __init__(self) -> None:
        self._totals: dict[Hashable, float] = {}
        self._attributes: dict[Hashable, Mapping[str, str | int]] = {}
        self._before: list[Callable[[], None]] = []

    def before_observe(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` at each collection, before the totals are read (what hands the SDK
        the points a meter queued: ``toolkit.telemetry.batched``)."""
        self._before.append(hook)

    def add(self, key: Hashable, attributes: Mapping[str, str | int], amount: float = 1) -> None:
        """Add ``amount`` to the series ``key``, whose attributes are ``attributes``."""
        total = self._totals.get(key)
        if total is None:
            self._attributes[key] = attributes
            total = 0
        self._totals[key] = total + amount

    def totals(self) -> list[tuple[Mapping[str, str | int], float]]:
        """Every series' attributes and total so far (the status page reads them)."""
        return [(self._attributes[key], total) for key, total in list(self._totals.items())]

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        for hook in self._before:
            hook()
        # Collection may run on another thread: copy the items in one step first.
        return [
            Observation(total, self._attributes[key]) for key, total in list(self._totals.items())
        ]


def shared_counts(meter: Meter, metric: ObservedMetric) -> Counts:
    """The store behind ``metric`` on ``meter``, creating its instrument once."""
    per_meter = _stores.setdefault(meter, {})
    counts = per_meter.get(metric.name)
    if counts is None:
        counts = per_meter[metric.name] = Counts()
        metric.create(meter, [counts.observe])
    return counts


def shared_callbacks(meter: Meter, metric: ObservedMetric) -> list[Callback]:
    """The callbacks behind observable ``metric`` on ``meter``: append yours.

    The instrument is created once, with a callback that asks every registered one."""
    per_meter = _callbacks.setdefault(meter, {})
    registered = per_meter.get(metric.name)
    if registered is None:
        registered = per_meter[metric.name] = []

        def observe_all(options: CallbackOptions) -> Iterable[Observation]:
            return [seen for callback in list(registered) for seen in callback(options)]

        metric.create(meter, [observe_all])
    return registered
