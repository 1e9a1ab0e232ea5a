"""The ``backend`` section: where shared state lives."""

from __future__ import annotations

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import BackendUrl, Seconds


class BackendSettings(Section):
    """Where shared state lives: in this process, or in Redis for many instances."""

    url: BackendUrl = Field(
        "memory://",
        description="memory:// (one process) or redis://, rediss://, redis+cluster:// (many).",
        examples=["redis://localhost:6379/0"],
    )
    timeout: Seconds = Field(
        0.1,
        ge=0.01,
        le=10,
        description="Upper bound on every backend call, in seconds; past it the call fails. "
        "10ms to 10s: below 10ms a round trip and the event loop's own delay exceed it and "
        "every call fails (open: nothing is limited); above 10s a stalled backend holds every "
        "request that long.",
        examples=["50ms"],
    )
    key_prefix: str = Field(
        "toolkit",
        min_length=1,
        description="Prefix of every key the toolkit writes, so one Redis can serve many apps.",
        examples=["my-agent"],
    )
    max_connections: int = Field(
        64,
        ge=1,
        le=10000,
        description="Size of the Redis connection pool per process. 1 to 10000, Redis's "
        "default maxclients: one process must not be able to take every connection.",
        examples=["64"],
    )
