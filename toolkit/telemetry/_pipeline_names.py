"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

from typing import Final

from toolkit.telemetry.metric import (
    HISTOGRAM,
    OBSERVABLE_COUNTER,
    OBSERVABLE_UP_DOWN_COUNTER,
    Metric,
)

# --- fan-out (toolkit.gather) ---------------------------------------------------------------

# --- request deadlines ------------------------------------------------------------------------

# --- deferred work (toolkit.defer, @toolkit.background) ---------------------------------------

# --- offloaded calls (@toolkit.offload, toolkit.run_sync) -------------------------------------

OFFLOAD_SPAN: Final = "toolkit.offload {toolkit.offload.name}"
"""INTERNAL span of one offloaded call, under the caller's span, from the call to the end of
the function on its thread (or to its refusal): the wait for a thread is inside it, and the
function's own spans are its children."""
OFFLOAD_NAME: Final = "toolkit.offload.name"
"""The offloaded function: ``name=`` of ``@offload``, else its qualified name; on metrics,
the first ``MAX_OFFLOAD_NAMES`` names, then ``other``."""
OFFLOAD_OUTCOME: Final = "toolkit.offload.outcome"
"""How an offloaded call ended: one of :data:`OFFLOAD_OUTCOMES`."""
OFFLOAD_REASON: Final = "toolkit.offload.reason"
"""Why a call was refused without running: one of :data:`OFFLOAD_REASONS`."""
OFFLOAD_WAIT_TIME_ATTRIBUTE: Final = "toolkit.offload.wait_time"
"""On an offload span: seconds the call waited for a thread."""
OFFLOAD_STATE: Final = "toolkit.offload.state"
"""On the calls gauge: ``running`` (holding a thread) or ``waiting`` (for one)."""

MAX_OFFLOAD_NAMES: Final = 100
"""Function names kept apart on the offload metrics; later ones are ``other``."""

OFFLOAD_OK: Final = "ok"
"""The function returned, and its caller had its value."""
OFFLOAD_ERROR: Final = "error"
"""The function raised; its caller had the exception."""
OFFLOAD_ABANDONED: Final = "abandoned"
"""The caller stopped waiting while the function ran (its deadline passed, or it was
cancelled); the thread went on to the end, which this records."""
OFFLOAD_REFUSED: Final = "refused"
"""The function never ran (on the span only; the refusals metric counts these by reason)."""
OFFLOAD_CANCELLED: Final = "cancelled"
"""The caller was cancelled while it waited for a thread: the function never ran (span only)."""
OFFLOAD_OUTCOMES: Final = (
    OFFLOAD_OK,
    OFFLOAD_ERROR,
    OFFLOAD_ABANDONED,
    OFFLOAD_REFUSED,
    OFFLOAD_CANCELLED,
)

OFFLOAD_FULL: Final = "queue_full"
"""Every thread was busy and ``offload.max_waiting`` calls already waited."""
OFFLOAD_DEADLINE: Final = "deadline"
"""The deadline passed before a thread came free (or before the call)."""
OFFLOAD_CLOSED: Final = "closed"
"""The pool was shut down (the app stops)."""
OFFLOAD_REASONS: Final = (OFFLOAD_FULL, OFFLOAD_DEADLINE, OFFLOAD_CLOSED)

OFFLOAD_WAIT_BUCKETS: Final = (
    0.00001,
    0.0001,
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
)
"""Seconds: from a free thread in microseconds to a queue of slow calls."""
OFFLOAD_DURATION_BUCKETS: Final = (
    0.0005,
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
    60.0,
)
"""Seconds: a sqlite read in a millisecond to a sync SDK call stuck for a minute."""

OFFLOAD_WAIT_TIME: Final = "toolkit.offload.wait_time"
"""How long each call that ran waited for a thread, by function."""
OFFLOAD_WAIT_TIME_METRIC: Final = Metric(
    OFFLOAD_WAIT_TIME,
    HISTOGRAM,
    unit="s",
    description="Time an offloaded call waited for a thread of the offload pool.",
    attributes=(OFFLOAD_NAME,),
    buckets=OFFLOAD_WAIT_BUCKETS,
)

OFFLOAD_DURATION: Final = "toolkit.offload.duration"
"""How long each offloaded function ran on its thread, by function and outcome (``ok``,
``error``, ``abandoned``: the count of calls that outlived their caller is here)."""
OFFLOAD_DURATION_METRIC: Final = Metric(
    OFFLOAD_DURATION,
    HISTOGRAM,
    unit="s",
    description="Time an offloaded function ran on its thread, by outcome.",
    attributes=(OFFLOAD_NAME, OFFLOAD_OUTCOME),
    buckets=OFFLOAD_DURATION_BUCKETS,
)

OFFLOAD_CALLS: Final = "toolkit.offload.calls"
"""Offloaded calls in flight: ``running`` on a thread (abandoned ones included, until they
end) and ``waiting`` for one."""
OFFLOAD_CALLS_METRIC: Final = Metric(
    OFFLOAD_CALLS,
    OBSERVABLE_UP_DOWN_COUNTER,
    unit="{call}",
    description="Offloaded calls running on a thread or waiting for one.",
    attributes=(OFFLOAD_STATE,),
)

OFFLOAD_REFUSALS: Final = "toolkit.offload.refusals"
"""Calls refused without running, by function and reason."""
OFFLOAD_REFUSALS_METRIC: Final = Metric(
    OFFLOAD_REFUSALS,
    OBSERVABLE_COUNTER,
    unit="{call}",
    description="Offloaded calls refused without running, by reason.",
    attributes=(OFFLOAD_NAME, OFFLOAD_REASON),
)
