"""The ``telemetry`` section: traces and metrics."""

from __future__ import annotations

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Path


class TelemetrySettings(Section):
    """Traces and metrics."""

    enabled: bool = Field(True, description="Default of the 'tracing' flag.")
    service_name: str = Field(
        "agent-server",
        min_length=1,
        description="service.name of traces and metrics.",
        examples=["support-agent"],
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL; traces and metrics are exported there when set.",
        examples=["http://localhost:4318"],
    )
    prometheus: bool = Field(True, description="Serve metrics in Prometheus format.")
    metrics_path: Path = Field("/metrics", description="Where Prometheus metrics are served.")
    excluded_paths: list[Path] = Field(
        default_factory=list,
        description="Paths with no span and no HTTP metrics (patterns allowed).",
        examples=['["/health"]'],
    )
