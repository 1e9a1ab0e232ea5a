"""Agent pipelines: fan-out with deadlines, request deadlines, deferred work and blocking calls
off the event loop. Every wait here respects the current deadline (``toolkit._deadlines``)."""

from toolkit._deadlines import deadline, time_left
from toolkit.errors import DeadlineExceeded, DeferRefused
from toolkit.pipelines._background import Background, background, defer
from toolkit.pipelines._branch import Branch, BranchOutcome, BranchResult, GatherResult, branch
from toolkit.pipelines._deadline_middleware import DeadlineMiddleware
from toolkit.pipelines._deferred import TaskHandle
from toolkit.pipelines._gather import gather
from toolkit.pipelines._offload import Offloaded, offload, run_sync

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
