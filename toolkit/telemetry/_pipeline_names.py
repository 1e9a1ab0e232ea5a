"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv.attributes import error_attributes

from toolkit.telemetry.metric import (
    HISTOGRAM,
    OBSERVABLE_COUNTER,
    OBSERVABLE_UP_DOWN_COUNTER,
    Metric,
)

# --- fan-out (toolkit.gather) ---------------------------------------------------------------

# --- request deadlines ------------------------------------------------------------------------

# --- deferred work (toolkit.defer, @toolkit.background) ---------------------------------------
# The task's span is a CONSUMER span, as a message's processing is in OpenTelemetry's messaging
# conventions: a root of its own trace, LINKED to the span that deferred it (never its child,
# which would stretch the request's trace past its answer).
DEFERRED_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Seconds: a hand-off picked up at once (a millisecond) to a task waiting or running minutes."""

TASK_NAME: Final = "toolkit.task.name"
"""The registered name of a deferred task (``memory.extract``, or ``module:qualname``); on its
span, the hand-off's events and every deferred metric (bounded: ``other`` past 100 names)."""
TASK_ID: Final = "toolkit.task.id"
"""The id of one deferred task (its handle's ``id``), on its span and the hand-off event."""
TASK_ATTEMPT: Final = "toolkit.task.attempt"
"""On a task's span: which delivery of the task this is (1 in process; more when a durable
engine delivers it again)."""
TASK_QUEUED_TIME: Final = "toolkit.task.queued_time"
"""On a task's span: seconds between the hand-off and the start."""
TASK_OUTCOME: Final = "toolkit.task.outcome"
"""How a task ended: ``done``, ``failed`` (after its retries) or ``cancelled`` (the grace
ran out at shutdown)."""
TASK_DONE: Final = "done"
TASK_FAILED: Final = "failed"
TASK_CANCELLED: Final = "cancelled"
DEFER_QUEUE_FULL: Final = "queue_full"
"""``error.type`` of a hand-off refused because the queue stayed full."""
DEFER_STOPPED: Final = "stopped"
"""``error.type`` of a hand-off refused because the runner has stopped (after shutdown)."""

DEFERRED_SPAN: Final = "toolkit.deferred {task}"
"""CONSUMER span of one deferred task's run (retries included), named
``toolkit.deferred memory.extract``, linked to the deferring span."""
DEFER_ACCEPTED_EVENT: Final = "toolkit.deferred.accepted"
"""Span event on the deferring span when a task was handed off: task name and id."""
DEFER_REFUSED_EVENT: Final = "toolkit.deferred.refused"
"""Span event on the deferring span when a hand-off was refused: task name, ``error.type``
(``queue_full`` or ``stopped``)."""
DEFERRED_SPAN_EVENTS: Final = (DEFER_ACCEPTED_EVENT, DEFER_REFUSED_EVENT)

DEFERRED_QUEUED: Final = "toolkit.deferred.queued"
"""Tasks accepted and not started yet, by task name."""
DEFERRED_QUEUED_METRIC: Final = Metric(
    DEFERRED_QUEUED,
    OBSERVABLE_UP_DOWN_COUNTER,
    unit="{task}",
    description="Deferred tasks accepted and not started yet.",
    attributes=(TASK_NAME,),
)

DEFERRED_RUNNING: Final = "toolkit.deferred.running"
"""Tasks running now (retries and their backoff included), by task name."""
DEFERRED_RUNNING_METRIC: Final = Metric(
    DEFERRED_RUNNING,
    OBSERVABLE_UP_DOWN_COUNTER,
    unit="{task}",
    description="Deferred tasks running now.",
    attributes=(TASK_NAME,),
)

DEFERRED_TASKS: Final = "toolkit.deferred.tasks"
"""Tasks that ended, by task name and outcome (done, failed, cancelled)."""
DEFERRED_TASKS_METRIC: Final = Metric(
    DEFERRED_TASKS,
    OBSERVABLE_COUNTER,
    unit="{task}",
    description="Deferred tasks that ended, by outcome.",
    attributes=(TASK_NAME, TASK_OUTCOME),
)

DEFERRED_RETRIES: Final = "toolkit.deferred.retries"
"""Retries of failed tasks, by task name."""
DEFERRED_RETRIES_METRIC: Final = Metric(
    DEFERRED_RETRIES,
    OBSERVABLE_COUNTER,
    unit="{retry}",
    description="Retries of failed deferred tasks.",
    attributes=(TASK_NAME,),
)

DEFERRED_REFUSED: Final = "toolkit.deferred.refused"
"""Hand-offs refused, by task name and ``error.type`` (queue_full, stopped)."""
DEFERRED_REFUSED_METRIC: Final = Metric(
    DEFERRED_REFUSED,
    OBSERVABLE_COUNTER,
    unit="{task}",
    description="Deferred tasks refused at the hand-off.",
    attributes=(TASK_NAME, error_attributes.ERROR_TYPE),
)

DEFERRED_LOST: Final = "toolkit.deferred.lost"
"""Tasks a crashed process had accepted and not finished, by task name: counted from its
journal by the next process of the same service on the same host, when it starts."""
DEFERRED_LOST_METRIC: Final = Metric(
    DEFERRED_LOST,
    OBSERVABLE_COUNTER,
    unit="{task}",
    description="Deferred tasks lost in a crash, reported at the next start.",
    attributes=(TASK_NAME,),
)

DEFERRED_QUEUED_TIME: Final = "toolkit.deferred.queued_time"
"""Seconds from the hand-off to the start of each task (its age at start), by task name."""
DEFERRED_QUEUED_TIME_METRIC: Final = Metric(
    DEFERRED_QUEUED_TIME,
    HISTOGRAM,
    unit="s",
    description="Time deferred tasks waited between the hand-off and their start.",
    attributes=(TASK_NAME,),
    buckets=DEFERRED_BUCKETS,
)

DEFERRED_DURATION: Final = "toolkit.deferred.duration"
"""Seconds each task ran (its retries and their waits included), by task name and outcome."""
DEFERRED_DURATION_METRIC: Final = Metric(
    DEFERRED_DURATION,
    HISTOGRAM,
    unit="s",
    description="Time deferred tasks ran, retries included.",
    attributes=(TASK_NAME, TASK_OUTCOME),
    buckets=DEFERRED_BUCKETS,
)

# --- offloaded calls (@toolkit.offload, toolkit.run_sync) -------------------------------------

# --- durable deferred work (defer.durable: the Redis queue and its workers) -------------------
# The task's span on a worker is the deferred-work span above, with the messaging attributes.


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
