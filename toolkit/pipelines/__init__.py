"""Agent pipelines: fan-out with deadlines, request deadlines, deferred work and blocking calls
off the event loop. Every wait here respects the current deadline (``toolkit._deadlines``)."""

from toolkit._deadlines import deadline, time_left
from toolkit.errors import DeadlineExceeded, DeferRefused
from toolkit.pipelines._background import Background, background, defer
from toolkit.pipelines._deferred import TaskHandle

__all__ = [
    "Background",
    "DeadlineExceeded",
    "DeferRefused",
    "TaskHandle",
    "background",
    "deadline",
    "defer",
    "time_left",
]
