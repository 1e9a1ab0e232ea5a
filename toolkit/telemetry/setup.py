"""Tracer and meter providers for the toolkit: the app's own when it has them, else ours.

The toolkit never replaces providers the application set, and never sets the global ones
itself. Setting them would switch on FastAPI's own per-request telemetry (a second server span
and duplicate HTTP metrics, measured at about +190 µs per request) and would take the global
slot from an application that configures OpenTelemetry after ``install()``. Providers the
toolkit creates therefore serve its own spans and instruments only; an application that wants
its spans in the same traces configures OpenTelemetry itself, before or after install(), or
takes ``Telemetry.tracer_provider``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from toolkit.errors import ConfigurationError
from toolkit.settings import TelemetrySettings


@dataclass
class Telemetry:
    """The providers the toolkit's spans and instruments use.

    Attributes:
        tracer_provider / meter_provider: the application's (explicit or global), or the
            toolkit's own when the application had none.
        prometheus_registry: where the Prometheus exposition of the toolkit's own meter
            provider reads from; None when the application owns metrics.
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
) -> Telemetry:
    """Resolve the providers: explicit arguments, else the application's global ones, else
    providers the toolkit creates (Prometheus reader; OTLP/HTTP exporters when configured)."""
    tracer_provider = tracer_provider or trace.get_tracer_provider()
    meter_provider = meter_provider or metrics.get_meter_provider()
    telemetry = Telemetry(tracer_provider, meter_provider)
    otlp = settings.otlp_endpoint
    need_tracer = _unset(tracer_provider) and otlp is not None
    need_meter = _unset(meter_provider) and (settings.prometheus or settings.otlp_endpoint)
    if not (need_tracer or need_meter):
        return telemetry

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create({SERVICE_NAME: settings.service_name})
    if need_tracer and otlp is not None:
        telemetry.tracer_provider = _create_tracer_provider(otlp, resource)
        telemetry._owned.append(telemetry.tracer_provider)
    if need_meter:
        telemetry.meter_provider, telemetry.prometheus_registry = _create_meter_provider(
            settings, resource
        )
        telemetry._owned.append(telemetry.meter_provider)
    return telemetry


def _create_tracer_provider(endpoint: str, resource: object) -> trace.TracerProvider:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)  # type: ignore[arg-type]
    exporter = _otlp("trace_exporter", "OTLPSpanExporter")(endpoint=_signal_url(endpoint, "traces"))
    provider.add_span_processor(BatchSpanProcessor(exporter))
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
