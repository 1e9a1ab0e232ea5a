"""The ``status`` section: the in-process percentiles, the kept traces and the status page."""

from __future__ import annotations

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Seconds


class StatusSettings(Section):
    """What the toolkit keeps in process for its status page and ``/stats``, which need no
    collector: recent percentiles per route, agent and model, and the slowest and failed
    recent traces. The page and ``/stats`` are served under ``admin.path`` (a token needed)."""

    enabled: bool = Field(
        True,
        description="Keep the recent percentiles and serve the status page and its JSON.",
    )
    traces: bool = Field(
        True,
        description="Keep the slowest and the failed recent traces in process when no "
        "telemetry.otlp_endpoint is set (a collector has them otherwise).",
    )
    window: Seconds = Field(
        300.0,
        ge=10,
        le=3600,
        description="The recent past that percentiles, throughput, error rates and kept traces "
        "cover. 10s to 1h.",
        examples=["5m"],
    )
    slowest_per_route: int = Field(
        5,
        ge=1,
        le=100,
        description="Slowest traces kept per route within the window. 1 to 100.",
        examples=["5"],
    )
    max_traces: int = Field(
        200,
        ge=1,
        le=10000,
        description="Traces kept at most, slow and failed together. 1 to 10000.",
        examples=["200"],
    )
    max_bytes: int = Field(
        4 * 1024 * 1024,
        ge=65536,
        le=1073741824,
        description="Bytes the kept traces take at most (their JSON form). 65536 to 1073741824.",
        examples=["4194304"],
    )
    max_spans: int = Field(
        256,
        ge=1,
        le=10000,
        description="Spans kept per trace; the rest are counted as dropped. 1 to 10000.",
        examples=["256"],
    )
    max_routes: int = Field(
        200,
        ge=1,
        le=10000,
        description="Routes (method and template) with their own percentiles; the others are "
        "counted under 'other'. 1 to 10000.",
        examples=["200"],
    )
    max_names: int = Field(
        100,
        ge=1,
        le=10000,
        description="Agents, and models, with their own percentiles; the others are counted "
        "under 'other'. 1 to 10000.",
        examples=["100"],
    )
