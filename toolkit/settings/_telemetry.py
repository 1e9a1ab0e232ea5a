"""The ``telemetry`` section: traces and metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Path, Seconds


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
    # Several workers behind one port (docs/telemetry.md, "Several workers").
    merge_workers: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Serve every worker's metrics at metrics_path under uvicorn --workers or "
        "gunicorn: auto (when such a server is detected), on (always), off (each scrape "
        "reaches one worker).",
        examples=["on"],
    )
    merge_timeout: Seconds = Field(
        1.0,
        ge=0.01,
        le=30,
        description="Longest a scrape waits for the other workers; one that is late is "
        "served from its last answer. 10ms to 30s.",
        examples=["500ms"],
    )
    merge_directory: str | None = Field(
        None,
        min_length=1,
        description="Where the workers' shared directory is made (the system's temporary "
        "directory when unset); it must be local to the machine.",
        examples=["/run/agent-server"],
    )
