"""Fan-out: concurrent branches, each with its own deadline and fallback
(``toolkit.gather``, ``toolkit.branch``)."""

from toolkit.pipelines.fanout._branch import (
    Branch,
    BranchOutcome,
    BranchResult,
    GatherResult,
    branch,
)
from toolkit.pipelines.fanout._gather import gather

__all__ = ["Branch", "BranchOutcome", "BranchResult", "GatherResult", "branch", "gather"]
