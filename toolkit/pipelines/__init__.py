"""Agent pipelines: fan-out with deadlines, request deadlines, deferred work and blocking calls
off the event loop. Every wait here respects the current deadline (``toolkit._deadlines``)."""

from toolkit._deadlines import deadline, time_left
from toolkit.errors import DeadlineExceeded
from toolkit.pipelines._offload import Offloaded, offload, run_sync

__all__ = ["DeadlineExceeded", "Offloaded", "deadline", "offload", "run_sync", "time_left"]
