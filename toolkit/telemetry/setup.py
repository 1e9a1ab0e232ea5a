"""Tracer and meter providers for the toolkit: the app's own when it has them, else ours.

The toolkit never replaces providers the application set, and never sets the global ones
itself. Setting them would switch on FastAPI's own per-request telemetry (a second server span
and duplicate HTTP metrics, measured at about +190 µs per request) and would take the global
slot from an application that configures OpenTelemetry after ``install()``. Providers the
toolkit creates therefore serve its own spans and instruments only; an application that wants
its spans in the same traces configures OpenTelemetry itself, before or after install(), or
takes ``Telemetry.tracer_provider``.

Span processors the toolkit brings (the status page's agent figures and trace buffer) are added
to the application's SDK tracer provider; with none, the toolkit creates its own provider for
them (never the global one), so that the status page has traces without any configuration.

An application's meter provider that has a Prometheus reader is served at ``/metrics`` (the
toolkit's metrics are in it); one without is reported at startup with what to do, since
``/metrics`` then has nothing of the toolkit's to serve.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from toolkit.errors import ConfigurationError
from toolkit.settings import TelemetrySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

logger = logging.getLogger("toolkit.telemetry")


@dataclass
class Telemetry:
    """The providers the toolkit's spans and instruments use.

    Attributes:
        tracer_provider / meter_provider: the application's (explicit or global), or the
            toolkit's own when the application had none.
        prometheus_registry: what ``/metrics`` serves: the registry of the toolkit's own
            meter provider, or the one the application's Prometheus reader writes to; None
            when metrics go only to an application provider without one, or Prometheus is off.
    """

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    prometheus_registry: CollectorRegistry | None = None
    _owned: list[object] = field(default_factory=list, repr=False)

    def shutdown(self) -> None:
        """Flush and stop the providers the toolkit created; the application's are left alone."""
        for provider in self._owned:
            provider.shutdown()  # type: ignore[attr-defined]
        self._owned.clear()


def _unset(provider: object) -> bool:
    # The API hands out proxy providers until an SDK provider is set globally.
    return type(provider).__name__ in ("ProxyTracerProvider", "_ProxyMeterProvider")


def setup_telemetry(
    settings: TelemetrySettings,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    span_processors: Sequence[SpanProcessor] = (),
) -> Telemetry:
    """Resolve the providers: explicit arguments, else the application's global ones, else
    providers the toolkit creates (Prometheus reader; OTLP/HTTP exporters when configured;
    a tracer provider for ``span_processors``, which go on the application's otherwise)."""
    tracer_provider = tracer_provider or trace.get_tracer_provider()
    meter_provider = meter_provider or metrics.get_meter_provider()
    telemetry = Telemetry(tracer_provider, meter_provider)
    if settings.prometheus and not _unset(meter_provider):
        telemetry.prometheus_registry = _application_registry(meter_provider, settings)
    otlp = settings.otlp_endpoint
    need_tracer = _unset(tracer_provider) and (otlp is not None or bool(span_processors))
    if span_processors and not need_tracer:
        _add_processors(tracer_provider, span_processors)
    need_meter = _unset(meter_provider) and (settings.prometheus or settings.otlp_endpoint)
    if not (need_tracer or need_meter):
        return telemetry

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create({SERVICE_NAME: settings.service_name})
    if need_tracer:
        telemetry.tracer_provider = _create_tracer_provider(otlp, resource, span_processors)
        telemetry._owned.append(telemetry.tracer_provider)
    if need_meter:
        telemetry.meter_provider, telemetry.prometheus_registry = _create_meter_provider(
            settings, resource
        )
        telemetry._owned.append(telemetry.meter_provider)
    return telemetry


def _application_registry(
    provider: metrics.MeterProvider, settings: TelemetrySettings
) -> CollectorRegistry | None:
    """The registry the application's own Prometheus reader on ``provider`` writes to (the
    toolkit's instruments report through that provider), or None, logged with what to do."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    # The SDK has no public way to list a provider's readers, nor the exporter a reader's
    # registry: read both where they are kept (older SDKs keep the readers in _sdk_config,
    # and before 0.64b0 the exporter always writes to REGISTRY).
    config = getattr(provider, "_sdk_config", None)
    readers = getattr(provider, "_metric_readers", None) or getattr(config, "metric_readers", None)
    for reader in readers or ():
        if isinstance(reader, PrometheusMetricReader):
            registry: CollectorRegistry = getattr(reader, "_registry", REGISTRY)
            return registry
    logger.warning(
        "%s is not served: the toolkit's metrics go to the application's MeterProvider (%s), "
        "which has no Prometheus reader. To serve them there, add "
        "opentelemetry.exporter.prometheus.PrometheusMetricReader() to that provider's "
        "metric_readers; if they are exported another way, set "
        "TOOLKIT_TELEMETRY__PROMETHEUS=false to silence this.",
        settings.metrics_path,
        type(provider).__name__,
    )
    return None


def _add_processors(provider: trace.TracerProvider, processors: Sequence[SpanProcessor]) -> None:
    add = getattr(provider, "add_span_processor", None)
    if add is None:
        logger.warning(
            "the application's tracer provider (%s) takes no span processors: the status page "
            "has no traces and no agent or model figures. Use the OpenTelemetry SDK's "
            "TracerProvider, or pass install(tracer_provider=...) one.",
            type(provider).__name__,
        )
        return
    for processor in processors:
        add(processor)


def _create_tracer_provider(
    endpoint: str | None, resource: object, processors: Sequence[SpanProcessor]
) -> trace.TracerProvider:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from toolkit.telemetry._ids import PrivateIdGenerator

    provider = TracerProvider(resource=resource, id_generator=PrivateIdGenerator())  # type: ignore[arg-type]
    for processor in processors:
        provider.add_span_processor(processor)
    if endpoint is not None:
        exporter = _otlp("trace_exporter", "OTLPSpanExporter")
        provider.add_span_processor(
            BatchSpanProcessor(exporter(endpoint=_signal_url(endpoint, "traces")))
        )
    return provider


def _create_meter_provider(
    settings: TelemetrySettings, resource: object
) -> tuple[metrics.MeterProvider, CollectorRegistry | None]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    registry = None
    if settings.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        # A registry of our own: several apps in one process (tests, mounted sub-apps) must
        # not collide in prometheus_client's global one.
        registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        readers.append(PrometheusMetricReader(registry=registry, scope_info_enabled=False))
    if settings.otlp_endpoint:
        exporter = _otlp("metric_exporter", "OTLPMetricExporter")(
            endpoint=_signal_url(settings.otlp_endpoint, "metrics")
        )
        readers.append(PeriodicExportingMetricReader(exporter))
    provider = MeterProvider(resource=resource, metric_readers=readers)  # type: ignore[arg-type]
    return provider, registry


def _signal_url(endpoint: str, signal: str) -> str:
    return endpoint.rstrip("/") + f"/v1/{signal}"


def _otlp(module: str, name: str) -> type:
    try:
        imported = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}")
    except ImportError as exc:
        raise ConfigurationError(
            "TOOLKIT_TELEMETRY__OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'agent-server-toolkit[otlp]'"
        ) from exc
    exporter: type = getattr(imported, name)
    return exporter
