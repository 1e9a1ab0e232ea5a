"""Agent pipelines: fan-out with deadlines, request deadlines, deferred work and blocking calls
off the event loop. Every wait here respects the current deadline (``toolkit._deadlines``)."""

from toolkit._deadlines import deadline, time_left
from toolkit.errors import DeadlineExceeded, DeferRefused
from toolkit.pipelines._deadline_middleware import DeadlineMiddleware
from toolkit.pipelines.deferred import Background, TaskHandle, background, defer
from toolkit.pipelines.fanout import (
    Branch,
    BranchOutcome,
    BranchResult,
    GatherResult,
    branch,
    gather,
)
from toolkit.pipelines.offloading import Offloaded, offload, run_sync

__all__ = [
    "Background",
    "Branch",
    "BranchOutcome",
    "BranchResult",
    "DeadlineExceeded",
    "DeadlineMiddleware",
    "DeferRefused",
    "GatherResult",
    "Offloaded",
    "TaskHandle",
    "background",
    "branch",
    "deadline",
    "defer",
    "gather",
    "offload",
    "run_sync",
    "time_left",
]
