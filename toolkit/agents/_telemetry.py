"""The tracer, instruments, label bounds and settings every agent, step and model call uses.

One :class:`AgentTelemetry` is current per process: ``install()`` makes it from the
``agents`` settings and the app's providers; without ``install()`` one is made on first use
from the defaults and the global providers (OpenTelemetry's proxies, which follow a provider
the application sets later). Everything a call needs is resolved here once, not per call.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any, Final, TypeVar

from opentelemetry import metrics, trace

from toolkit._current import Current
from toolkit._version import __version__
from toolkit.agents._content import capture_content
from toolkit.agents._cost import Prices
from toolkit.settings import AgentSettings
from toolkit.telemetry import names
from toolkit.telemetry.batched import batched_records
from toolkit.telemetry.counts import shared_counts
from toolkit.telemetry.labels import BoundedLabels

_MAX_MEMO: Final = 4096
"""Metric attribute sets (and, apart, kinds of call: a step's name, a model call's model,
provider and server) kept ready-made; past it, each call builds its own (still bounded
values: the memo only saves the work)."""

_MAX_KEY_CHARS: Final = 1024
"""Characters of the names a kind of call is kept under: a longer one is made again on each
call, so that what is kept stays bounded in bytes too."""

Attributes = Mapping[str, str | int]
T = TypeVar("T")


class AgentTelemetry:
    """Where agent, step and model-call spans and metrics go, and how they are bounded.

    Args:
        settings: the ``agents`` section; its defaults when None.
        tracer_provider / meter_provider: the global ones when None.
        environ: where ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is read (once,
            here); ``os.environ`` when None.
    """

    def __init__(
        self,
        settings: AgentSettings | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else AgentSettings.model_validate({})
        self.tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self.operation_duration = names.GEN_AI_CLIENT_OPERATION_DURATION_METRIC.create(meter)
        self.token_usage = names.GEN_AI_CLIENT_TOKEN_USAGE_METRIC.create(meter)
        self.time_to_first_chunk = names.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK_METRIC.create(
            meter
        )
        self.agent_duration = names.AGENT_DURATION_METRIC.create(meter)
        self.step_duration = names.STEP_DURATION_METRIC.create(meter)
        self.cost = shared_counts(meter, names.GEN_AI_COST_METRIC)
        self.records = batched_records(meter, self.cost)
        """Where the histograms' points go: to the SDK in batches, and at each collection."""
        limit = self.settings.max_label_values
        self.models = BoundedLabels(limit)
        self.providers = BoundedLabels(limit)
        self.agents = BoundedLabels(limit)
        self.steps = BoundedLabels(limit)
        self.errors = BoundedLabels(limit)
        self.servers = BoundedLabels(limit)
        self.capture_content = capture_content(
            self.settings.capture_content, os.environ if environ is None else environ
        )
        self.content_max_length = self.settings.content_max_length
        self.content_max_messages = self.settings.content_max_messages
        self.prices = Prices(self.settings.prices)
        self._memo: dict[tuple[str | int | None, ...], dict[str, Any]] = {}
        self._prepared: dict[Hashable, Any] = {}

    def attributes(self, keys: tuple[str, ...], values: tuple[str | int | None, ...]) -> Attributes:
        """The metric attributes ``keys`` -> ``values`` (a None value left out), made once per
        combination: every value is already a bounded label."""
        memo_key = (*keys, *values)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        made = {key: value for key, value in zip(keys, values, strict=True) if value is not None}
        if len(self._memo) < _MAX_MEMO:
            self._memo[memo_key] = made
        return made

    def prepared(self, key: Hashable) -> Any:
        """What :meth:`prepare` kept under ``key`` (a tuple naming its kind first), or None."""
        return self._prepared.get(key)

    def prepare(self, key: Hashable, made: T) -> T:
        """Keep ``made`` (what a kind of call needs, its labels already bounded) under
        ``key`` while fewer than the cap are kept; returns it. Labels only ever stay what
        they were first given (a bounded set only grows), so what is kept never goes stale."""
        if len(self._prepared) < _MAX_MEMO and _chars(key) <= _MAX_KEY_CHARS:
            self._prepared[key] = made
        return made


def _chars(key: Hashable) -> int:
    return sum(len(part) for part in key if isinstance(part, str)) if isinstance(key, tuple) else 0


_CURRENT: Current[AgentTelemetry] = Current(AgentTelemetry)


def current_agent_telemetry() -> AgentTelemetry:
    """The telemetry ``install()`` set up last, else one from the defaults and the global
    providers, made on first use."""
    return _CURRENT.get()


def set_current_agent_telemetry(telemetry: AgentTelemetry | None) -> None:
    """Make ``telemetry`` the current one (``install()`` does this); None goes back to the
    default, made again on next use."""
    _CURRENT.set(telemetry)
