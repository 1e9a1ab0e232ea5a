"""Agent pipelines: fan-out with deadlines, request deadlines, deferred work and blocking calls
off the event loop. Every wait here respects the current deadline (``toolkit._deadlines``)."""

from toolkit._deadlines import deadline, time_left
from toolkit.errors import DeadlineExceeded
from toolkit.pipelines._branch import Branch, BranchOutcome, BranchResult, GatherResult, branch
from toolkit.pipelines._deadline_middleware import DeadlineMiddleware
from toolkit.pipelines._gather import gather

__all__ = [
    "Branch",
    "BranchOutcome",
    "BranchResult",
    "DeadlineExceeded",
    "DeadlineMiddleware",
    "GatherResult",
    "branch",
    "deadline",
    "gather",
    "time_left",
]
