"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

from typing import Final

from toolkit.telemetry.metric import COUNTER, HISTOGRAM, Metric

# --- fan-out (toolkit.gather) ---------------------------------------------------------------
FANOUT_SPAN: Final = "toolkit.gather"
"""INTERNAL span of one ``toolkit.gather`` call, named ``toolkit.gather {name}``; its branches'
spans are its children."""
BRANCH_SPAN: Final = "toolkit.branch"
"""INTERNAL span of one branch of a fan-out, named ``toolkit.branch {branch}``."""
FANOUT_NAME: Final = "toolkit.fanout.name"
"""The fan-out's ``name=`` (``gather`` unless given); on metrics, bounded (``other`` past a cap)."""
FANOUT_BRANCH: Final = "toolkit.fanout.branch"
"""A branch's name; on metrics, bounded (``other`` past a cap)."""
FANOUT_OUTCOME: Final = "toolkit.fanout.outcome"
"""How a branch ended: one of :data:`BRANCH_OUTCOMES`."""
BRANCH_OUTCOMES: Final = ("ok", "fallback", "failed", "timeout", "cancelled")
"""``ok`` answered; ``fallback`` failed or timed out and its fallback answered; ``failed``
raised (or its fallback did); ``timeout`` ran out of time (its own deadline, the fan-out's or
the request's) with no fallback; ``cancelled`` stopped by ``first=``/``enough=`` or the caller."""
FANOUT_BRANCHES: Final = "toolkit.fanout.branches"
"""On the fan-out span: how many branches it ran."""
FANOUT_ANSWERED: Final = "toolkit.fanout.answered"
"""On the fan-out span: how many branches answered (``ok`` or ``fallback``)."""
FANOUT_FAILED: Final = "toolkit.fanout.failed"
"""On the fan-out span: the names of the branches that failed or timed out (string array)."""
FANOUT_STOPPED: Final = "toolkit.fanout.stopped"
"""On the fan-out span, why it returned: ``all`` (every branch ended), ``first`` (``first=N``
reached), ``enough`` (the ``enough=`` predicate held) or ``deadline`` (stragglers cut)."""
FANOUT_STOP_REASONS: Final = ("all", "first", "enough", "deadline")

FANOUT_DURATION_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds: a branch is one store or model call, from a millisecond to tens of seconds."""

FANOUT_BRANCH_DURATION: Final = "toolkit.fanout.branch.duration"
"""Each branch of a ``toolkit.gather``, from its start to its outcome (its fallback included),
by fan-out, branch and outcome."""
FANOUT_BRANCH_DURATION_METRIC: Final = Metric(
    FANOUT_BRANCH_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of fan-out branches, by fan-out, branch and outcome.",
    attributes=(FANOUT_NAME, FANOUT_BRANCH, FANOUT_OUTCOME),
    buckets=FANOUT_DURATION_BUCKETS,
)

# --- request deadlines ------------------------------------------------------------------------
DEADLINE_BUDGET: Final = "toolkit.deadline.budget"
"""Seconds of time budget the work was given (double): on the server span, the request's;
on a fan-out or branch span, what that fan-out or branch had, after the outer deadlines."""
DEADLINE_SOURCE: Final = "toolkit.deadline.source"
"""Where a request's budget came from: one of :data:`DEADLINE_SOURCES`."""
DEADLINE_SOURCES: Final = ("default", "route", "header", "none")
"""``default`` the ``deadline.default`` setting, ``route`` a ``deadline.routes`` pattern,
``header`` the request's ``deadline.header`` (bounded by ``deadline.max``); ``none`` (on the
metric only) a ``DeadlineExceeded`` the route raised with no request budget set."""
DEADLINE_HEADER_IGNORED: Final = "toolkit.deadline.header_ignored"
"""On the server span, why the request's deadline header was not used: ``not_a_number``,
``not_positive``. Its value is never recorded."""
DEADLINE_EXPIRED: Final = "toolkit.deadline.expired"
"""On the server span: true when the request's deadline ran out before the answer started
(answered 504)."""

DEADLINE_EXCEEDED: Final = "toolkit.deadline.exceeded"
"""Requests answered 504 because their deadline ran out (or a ``DeadlineExceeded`` escaped the
route) before the response started, by where the budget came from (``none`` when the route's
own ``toolkit.deadline`` raised it)."""
DEADLINE_EXCEEDED_METRIC: Final = Metric(
    DEADLINE_EXCEEDED,
    COUNTER,
    unit="{request}",
    description="Requests answered 504 because their deadline ran out, by budget source.",
    attributes=(DEADLINE_SOURCE,),
)

# --- deferred work (toolkit.defer, @toolkit.background) ---------------------------------------

# --- offloaded calls (@toolkit.offload, toolkit.run_sync) -------------------------------------
