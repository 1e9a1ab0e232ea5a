"""The arguments of an AgentPool, with their defaults (no section of ToolkitSettings: each
pool is configured in its constructor)."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Seconds

PoolMode = Literal["shared", "exclusive"]


DEFAULT_EXCLUSIVE_POOL_SIZE: Final = 8
"""Objects per key of an exclusive pool whose ``size`` is unset."""


class PoolSettings(Section):
    """The arguments of an :class:`~toolkit.AgentPool`, with their defaults. Each pool is
    configured in its constructor (``AgentPool(make_agent, size=4)``); these are checked
    there, and an invalid one raises ConfigurationError naming the argument."""

    mode: PoolMode = Field(
        "exclusive",
        description="exclusive: each caller gets an object of its own (clients, sessions, "
        "sandboxes); shared: one object per key used by every caller at once (an Agent).",
        examples=["shared"],
    )
    size: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Per key, 1 to 10000. exclusive: objects built at most (8 when unset). "
        "shared: callers using the one object at once (no bound when unset: a shared agent is "
        "not throttled).",
        examples=["8"],
    )
    max_keys: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Keys the pool keeps at once; a new key past it evicts the least recently "
        "used idle key (its objects closed), or is refused (a 503) when every key is busy. "
        "1 to 100000.",
        examples=["16"],
    )
    max_waiting: int = Field(
        64,
        ge=0,
        le=100000,
        description="Per key: callers that may wait for room; past it acquire fails at once "
        "(PoolExhaustedError, a 503). 0 (never wait) to 100000.",
        examples=["64"],
    )
    acquire_timeout: Seconds = Field(
        30.0,
        ge=0.001,
        le=3600,
        description="Longest an acquire waits and builds before PoolTimeoutError (a 503). 1ms "
        "to 1h.",
        examples=["5s"],
    )
    create_timeout: Seconds = Field(
        60.0,
        ge=0.001,
        le=3600,
        description="Longest one factory call may run; past it the build is cancelled and "
        "its caller gets PoolTimeoutError. 1ms to 1h.",
        examples=["30s"],
    )
    recycle_after: Seconds | None = Field(
        None,
        ge=1,
        le=365 * 86400,
        description="Replace an object this long after it was built (minus jitter); never "
        "when unset. 1s (shorter rebuilds without pause) to 365d.",
        examples=["30m"],
    )
    max_uses: int | None = Field(
        None,
        ge=1,
        le=1000000000,
        description="Replace an object after this many acquires (minus jitter); never when "
        "unset. 1 to 1000000000.",
        examples=["1000"],
    )
    recycle_jitter: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Each object's age and use limits are shortened by up to this share, at "
        "random, so objects built together are not all replaced together.",
        examples=["0.1"],
    )
    wait_threshold: Seconds = Field(
        0.1,
        ge=0.001,
        le=3600,
        description="An acquire that waits at least this long gets a toolkit.pool.wait span. "
        "1ms to 1h.",
        examples=["100ms"],
    )
    check_interval: Seconds = Field(
        30.0,
        ge=0,
        le=3600,
        description="health_check runs on an object not known good for this long (built, "
        "checked, or given back without error); 0 checks at every checkout. In shared mode "
        "it runs in the background while callers go on using the object. 0s to 1h.",
        examples=["30s"],
    )
