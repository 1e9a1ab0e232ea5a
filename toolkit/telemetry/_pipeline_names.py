"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

# --- fan-out (toolkit.gather) ---------------------------------------------------------------

# --- request deadlines ------------------------------------------------------------------------

# --- deferred work (toolkit.defer, @toolkit.background) ---------------------------------------

# --- offloaded calls (@toolkit.offload, toolkit.run_sync) -------------------------------------

# --- durable deferred work (defer.durable: the Redis queue and its workers) -------------------
# The task's span on a worker is the deferred-work span above, with the messaging attributes.

from typing import Final  # noqa: E402

from opentelemetry.semconv._incubating.attributes import messaging_attributes  # noqa: E402

from toolkit.telemetry.metric import COUNTER, HISTOGRAM, Metric  # noqa: E402

MESSAGING_SYSTEM: Final = messaging_attributes.MESSAGING_SYSTEM
"""On the deferring span and the task's span in durable mode: ``"saq"``, the engine."""
MESSAGING_DESTINATION_NAME: Final = messaging_attributes.MESSAGING_DESTINATION_NAME
"""On the same spans: the queue (``defer.durable.queue``)."""
MESSAGING_MESSAGE_ID: Final = messaging_attributes.MESSAGING_MESSAGE_ID
"""On the same spans: the task's id in the queue, one per hand-off."""

DEFER_DURABLE_OUTCOME: Final = "toolkit.deferred.durable.outcome"
"""What a durable hand-off did: one of :data:`DEFER_DURABLE_OUTCOMES` (on the deferring span and
the hand-off metrics)."""
DEFER_DURABLE_QUEUED: Final = "queued"
"""Redis took the task; a worker will run it."""
DEFER_DURABLE_UNAVAILABLE: Final = "unavailable"
"""Redis could not take it in time: refused (``DurableUnavailable``)."""
DEFER_DURABLE_IN_PROCESS: Final = "in_process"
"""Redis could not take it, and ``on_unavailable = "in_process"`` ran it in this process."""
DEFER_DURABLE_INVALID: Final = "invalid"
"""Refused before Redis: an argument is not JSON, or the task is over ``max_payload_bytes``."""
DEFER_DURABLE_OUTCOMES: Final = (
    DEFER_DURABLE_QUEUED,
    DEFER_DURABLE_UNAVAILABLE,
    DEFER_DURABLE_IN_PROCESS,
    DEFER_DURABLE_INVALID,
)

DEFER_DURABLE_HANDOFF_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Seconds: a round trip to Redis (under a millisecond) to a hand-off that waited its timeout."""

DEFER_DURABLE_HANDOFFS: Final = "toolkit.deferred.durable.handoffs"
"""Durable hand-offs, by outcome."""
DEFER_DURABLE_HANDOFFS_METRIC: Final = Metric(
    DEFER_DURABLE_HANDOFFS,
    COUNTER,
    unit="{task}",
    description="Deferred tasks handed to the durable queue, by outcome.",
    attributes=(DEFER_DURABLE_OUTCOME,),
)

DEFER_DURABLE_HANDOFF_DURATION: Final = "toolkit.deferred.durable.handoff.duration"
"""Seconds a durable hand-off took on the caller's path (validation and the enqueue)."""
DEFER_DURABLE_HANDOFF_DURATION_METRIC: Final = Metric(
    DEFER_DURABLE_HANDOFF_DURATION,
    HISTOGRAM,
    unit="s",
    description="Time a deferring call spent handing its task to the durable queue.",
    attributes=(DEFER_DURABLE_OUTCOME,),
    buckets=DEFER_DURABLE_HANDOFF_BUCKETS,
)

DEFER_DURABLE_REDELIVERED: Final = "toolkit.deferred.durable.redelivered"
"""Runs of a durable task that started again because an earlier run was lost (its worker
died or stopped touching it)."""
DEFER_DURABLE_REDELIVERED_METRIC: Final = Metric(
    DEFER_DURABLE_REDELIVERED,
    COUNTER,
    unit="{task}",
    description="Durable task runs that started again after an earlier run was lost.",
    attributes=(),
)

DEFER_DURABLE_SWEPT: Final = "toolkit.deferred.durable.swept"
"""Lost runs a worker's sweep found: queued again while deliveries remain, else given up."""
DEFER_DURABLE_SWEPT_METRIC: Final = Metric(
    DEFER_DURABLE_SWEPT,
    COUNTER,
    unit="{task}",
    description="Durable task runs found lost (no heartbeat) and queued again or given up.",
    attributes=(),
)
