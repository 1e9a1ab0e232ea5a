"""The tracer, the branch-duration histogram and the label bounds every fan-out uses.

One :class:`FanoutTelemetry` is current per process: ``install()`` makes it from the app's
providers; without ``install()`` one is made on first use from the global providers
(OpenTelemetry's proxies, which follow a provider the application sets later).
"""

from __future__ import annotations

from typing import Final

from opentelemetry import metrics, trace

from toolkit._current import Current
from toolkit._version import __version__
from toolkit.telemetry import names
from toolkit.telemetry.labels import BoundedLabels

MAX_LABEL_VALUES: Final = 100
"""Fan-out names, and apart branch names, kept as metric labels; later ones are ``other``."""
_MAX_MEMO: Final = 4096
"""Attribute sets kept ready-made; past it each point builds its own (the labels are bounded
either way: the memo only saves the work)."""
_MAX_KEY_CHARS: Final = 256
"""Characters of the names an attribute set is kept under, so the memo is bounded in bytes."""


class FanoutTelemetry:
    """Where fan-out and branch spans and the branch durations go.

    Args:
        tracer_provider / meter_provider: the global ones when None.
    """

    __slots__ = ("_memo", "branch_duration", "branches", "fanouts", "tracer")

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self.branch_duration = names.FANOUT_BRANCH_DURATION_METRIC.create(meter)
        self.fanouts = BoundedLabels(MAX_LABEL_VALUES)
        self.branches = BoundedLabels(MAX_LABEL_VALUES)
        self._memo: dict[tuple[str, str, str], dict[str, str]] = {}

    def record(self, fanout: str, branch: str, outcome: str, seconds: float) -> None:
        """One branch's duration under its bounded labels."""
        key = (fanout, branch, outcome)
        attributes = self._memo.get(key)
        if attributes is None:
            attributes = {
                names.FANOUT_NAME: self.fanouts(fanout),
                names.FANOUT_BRANCH: self.branches(branch),
                names.FANOUT_OUTCOME: outcome,
            }
            if len(self._memo) < _MAX_MEMO and len(fanout) + len(branch) <= _MAX_KEY_CHARS:
                self._memo[key] = attributes
        self.branch_duration.record(seconds, attributes)


_CURRENT: Current[FanoutTelemetry] = Current(FanoutTelemetry)


def current_fanout_telemetry() -> FanoutTelemetry:
    """The telemetry ``install()`` set up last, else one on the global providers."""
    return _CURRENT.get()


def set_current_fanout_telemetry(telemetry: FanoutTelemetry | None) -> None:
    """Make ``telemetry`` the current one (``install()`` does this); None goes back to the
    default, made again on next use."""
    _CURRENT.set(telemetry)
