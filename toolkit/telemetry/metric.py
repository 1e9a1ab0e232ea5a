"""The record of one metric, and the one way to create its OpenTelemetry instrument.

``names.py`` declares every metric the toolkit emits as a :class:`Metric`: its name, kind,
unit, description, the only attributes it may carry and, for a histogram, its buckets. Code
creates instruments from these records (``names.BACKEND_ERRORS_METRIC.create(meter)``;
observable ones once per meter through :mod:`toolkit.telemetry.counts`), the dashboards
derive Prometheus names from them, and the registry test checks them against what the
toolkit really emits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    Observation,
)

Callback: TypeAlias = Callable[[CallbackOptions], Iterable[Observation]]
"""Reads the current values of an observable instrument when OpenTelemetry collects."""

Kind: TypeAlias = Literal["counter", "updowncounter", "gauge", "histogram"]
"""What an instrument's points are, whichever way they are recorded: a monotonic sum
(``counter``), a sum that goes up and down, a gauge or a histogram. Exporters name and type
metrics by it (Prometheus appends ``_total`` to a counter)."""

_I = TypeVar("_I", Counter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)


@dataclass(frozen=True, slots=True)
class InstrumentKind(Generic[_I]):
    """An OpenTelemetry instrument kind: the ``Meter`` method that creates it, whether it
    reports through callbacks at collection time, and the kind of points it exports."""

    method: str
    observed: bool
    points: Kind


COUNTER: Final[InstrumentKind[Counter]] = InstrumentKind("create_counter", False, "counter")
HISTOGRAM: Final[InstrumentKind[Histogram]] = InstrumentKind("create_histogram", False, "histogram")
OBSERVABLE_COUNTER: Final[InstrumentKind[ObservableCounter]] = InstrumentKind(
    "create_observable_counter", True, "counter"
)
OBSERVABLE_UP_DOWN_COUNTER: Final[InstrumentKind[ObservableUpDownCounter]] = InstrumentKind(
    "create_observable_up_down_counter", True, "updowncounter"
)
OBSERVABLE_GAUGE: Final[InstrumentKind[ObservableGauge]] = InstrumentKind(
    "create_observable_gauge", True, "gauge"
)


@dataclass(frozen=True, slots=True)
class Metric(Generic[_I]):
    """One metric the toolkit emits, declared once in ``names.py``.

    Args:
        name: the OpenTelemetry name, e.g. ``toolkit.rate_limit.requests``.
        kind: :data:`COUNTER`, :data:`HISTOGRAM` or an observable kind; it types what
            :meth:`create` returns.
        unit: UCUM, e.g. ``s``, or an annotation such as ``{request}``.
        description: what exporters show (Prometheus' ``# HELP``).
        attributes: the only attributes its points may carry: low-cardinality ones.
        buckets: a histogram's explicit bucket boundaries (an advisory the SDK applies
            unless a View says otherwise); None for every other kind.
    """

    name: str
    kind: InstrumentKind[_I]
    unit: str
    description: str
    attributes: tuple[str, ...]
    buckets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.buckets is not None and self.kind is not HISTOGRAM:
            raise ValueError(f"{self.name}: buckets are for histograms, not {self.kind.method}")

    def create(self, meter: Meter, callbacks: Sequence[Callback] = ()) -> _I:
        """The instrument on ``meter``; an observable one reports through ``callbacks``.

        OpenTelemetry keeps the callbacks of the first instrument of a name on a meter only:
        create an observable instrument once per meter (``toolkit.telemetry.counts``)."""
        if self.kind.observed != bool(callbacks):
            needs = "the callbacks that report it" if self.kind.observed else "no callbacks"
            raise TypeError(f"{self.name} ({self.kind.method}) takes {needs}")
        options: dict[str, Any] = {"unit": self.unit, "description": self.description}
        if self.kind.observed:
            options["callbacks"] = list(callbacks)
        if self.buckets is not None:
            options["explicit_bucket_boundaries_advisory"] = self.buckets
        instrument: _I = getattr(meter, self.kind.method)(self.name, **options)
        return instrument


ObservedMetric: TypeAlias = (
    Metric[ObservableCounter] | Metric[ObservableUpDownCounter] | Metric[ObservableGauge]
)
"""A metric whose values are read by callbacks when OpenTelemetry collects."""
