"""Counters kept in a dict on the hot path and handed to OpenTelemetry when it collects.

A synchronous OpenTelemetry ``add()`` cleans, hashes and aggregates its attributes on every
call (about 5 µs in the Python SDK); a request-path counter with a handful of fixed attribute
sets does not need that. Asynchronous (observable) instruments are the SDK's own answer: the
application keeps the totals, the SDK reads them at collection time. One store exists per
meter and metric, since the SDK keeps only the first callbacks of an instrument registered
twice (two apps in one process, one provider).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

_Factory = Callable[[Meter, Callable[[CallbackOptions], Iterable[Observation]]], Any]
_stores: weakref.WeakKeyDictionary[Meter, dict[str, Counts]] = weakref.WeakKeyDictionary()


class Counts:
    """Running totals per attribute set; ``add`` is a dict update."""

    __slots__ = ("_attributes", "_totals")

    def __init__(self) -> None:
        self._totals: dict[Hashable, int] = {}
        self._attributes: dict[Hashable, Mapping[str, str | int]] = {}

    def add(self, key: Hashable, attributes: Mapping[str, str | int], amount: int = 1) -> None:
        """Add ``amount`` to the series ``key``, whose attributes are ``attributes``."""
        total = self._totals.get(key)
        if total is None:
            self._attributes[key] = attributes
            total = 0
        self._totals[key] = total + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        # Collection may run on another thread: copy the items in one step first.
        return [
            Observation(total, self._attributes[key]) for key, total in list(self._totals.items())
        ]


def shared_counts(meter: Meter, name: str, create: _Factory) -> Counts:
    """The store behind metric ``name`` on ``meter``, creating the instrument once."""
    per_meter = _stores.setdefault(meter, {})
    counts = per_meter.get(name)
    if counts is None:
        counts = per_meter[name] = Counts()
        create(meter, counts.observe)
    return counts


_callbacks: weakref.WeakKeyDictionary[Meter, dict[str, list[Callable[..., Any]]]] = (
    weakref.WeakKeyDictionary()
)


def shared_callbacks(
    meter: Meter, name: str, create: _Factory
) -> list[Callable[[CallbackOptions], Iterable[Observation]]]:
    """The callbacks behind asynchronous instrument ``name`` on ``meter``: append yours.

    The instrument is created once, with a callback that asks every registered one."""
    per_meter = _callbacks.setdefault(meter, {})
    registered = per_meter.get(name)
    if registered is None:
        registered = per_meter[name] = []

        def observe_all(options: CallbackOptions) -> Iterable[Observation]:
            return [seen for callback in list(registered) for seen in callback(options)]

        create(meter, observe_all)
    return registered
