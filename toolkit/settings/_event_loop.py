"""The ``event_loop`` section: the loop monitor (lag probe and blocked-loop watchdog)."""

from __future__ import annotations

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Seconds


class EventLoopSettings(Section):
    """How :class:`~toolkit.LoopMonitor` watches the event loop; ``install()`` starts one
    with these unless ``enabled`` is false. The ``tracing.loop`` flag stops its recording at
    run time."""

    enabled: bool = Field(
        True, description="install() starts the loop monitor with the app (a thread and a timer)."
    )
    probe_interval: Seconds = Field(
        0.02,
        ge=0.001,
        le=1,
        description="How often the probe runs on the loop; a block is dated to within it. "
        "1ms to 1s.",
        examples=["20ms"],
    )
    blocked_threshold: Seconds = Field(
        0.1,
        ge=0.01,
        le=60,
        description="A loop that has not turned for this long is blocked: its stack is "
        "sampled and reported. 10ms to 1m.",
        examples=["100ms"],
    )
    spans_per_minute: int = Field(
        30,
        ge=0,
        le=10000,
        description="Most toolkit.event_loop.blocked spans recorded per minute; 0 records "
        "none. 0 to 10000.",
        examples=["30"],
    )
    logs_per_minute: int = Field(
        5,
        ge=0,
        le=10000,
        description="Most blocked-loop warnings logged per minute; 0 logs none. 0 to 10000.",
        examples=["5"],
    )
    stack_depth: int = Field(
        20,
        ge=1,
        le=200,
        description="Frames of the blocking stack kept, innermost first. 1 to 200.",
        examples=["20"],
    )
