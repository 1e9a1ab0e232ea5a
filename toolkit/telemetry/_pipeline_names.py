"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import messaging_attributes
from opentelemetry.semconv.attributes import error_attributes

from toolkit.telemetry._gen_ai_names import GEN_AI_DURATION_BUCKETS
from toolkit.telemetry.metric import (
    COUNTER,
    HISTOGRAM,
    OBSERVABLE_COUNTER,
    OBSERVABLE_UP_DOWN_COUNTER,
    Metric,
)

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

# --- streams (@toolkit.resilient on an async generator function) ------------------------------
_FUNCTION: Final = "toolkit.resilience.function"  # names.RESILIENCE_FUNCTION, declared there

RESILIENCE_STREAM_OUTCOME: Final = "toolkit.resilience.stream.outcome"
"""How a ``@resilient`` stream ended: one of :data:`RESILIENCE_STREAM_OUTCOMES`."""
RESILIENCE_STREAM_CHUNKS: Final = "toolkit.resilience.stream.chunks"
"""Chunks the consumer had received when the stream was interrupted (span events only)."""

STREAM_COMPLETE: Final = "complete"
"""The dependency's stream ended normally (an empty stream included)."""
STREAM_FALLBACK: Final = "fallback"
"""The stream failed before its first chunk and the fallback answered instead."""
STREAM_FAILED: Final = "failed"
"""The stream failed before its first chunk (after its retries), with no fallback: raised."""
STREAM_INTERRUPTED: Final = "interrupted"
"""The stream failed after its first chunk: raised to the consumer, never retried or answered
by the fallback (the consumer had chunks already)."""
STREAM_CLOSED: Final = "closed"
"""The consumer stopped early (``aclose()``, left its loop, was cancelled): no failure."""
RESILIENCE_STREAM_OUTCOMES: Final = (
    STREAM_COMPLETE,
    STREAM_FALLBACK,
    STREAM_FAILED,
    STREAM_INTERRUPTED,
    STREAM_CLOSED,
)

RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK: Final = "toolkit.resilience.stream.time_to_first_chunk"
"""From the call of a ``@resilient`` stream to its first chunk reaching the consumer, retries
and backoff (or the fallback) included, by function."""
RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK_METRIC: Final = Metric(
    RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK,
    HISTOGRAM,
    unit="s",
    description="Time from the call of a resilient stream to its first chunk, retries included.",
    attributes=(_FUNCTION,),
    buckets=GEN_AI_DURATION_BUCKETS,
)

RESILIENCE_STREAM_DURATION: Final = "toolkit.resilience.stream.duration"
"""From the call of a ``@resilient`` stream to its end, by function and outcome."""
RESILIENCE_STREAM_DURATION_METRIC: Final = Metric(
    RESILIENCE_STREAM_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of resilient streams, from the call to the end, by outcome.",
    attributes=(_FUNCTION, RESILIENCE_STREAM_OUTCOME),
    buckets=GEN_AI_DURATION_BUCKETS,
)

# --- durable deferred work (defer.durable: the Redis queue and its workers) -------------------
# The task's span on a worker is the deferred-work span above. The messaging attributes go on
# the deferring span and, with the operation's type, on the worker's task span, as the messaging
# conventions ask of a message's sending and its processing.


MESSAGING_SYSTEM: Final = messaging_attributes.MESSAGING_SYSTEM
"""On the deferring span in durable mode and the worker's task span: ``"saq"``, the engine."""
MESSAGING_DESTINATION_NAME: Final = messaging_attributes.MESSAGING_DESTINATION_NAME
"""On the same spans: the queue (``defer.durable.queue``)."""
MESSAGING_MESSAGE_ID: Final = messaging_attributes.MESSAGING_MESSAGE_ID
"""On the same spans: the task's id in the queue (its ``toolkit.task.id``)."""
MESSAGING_OPERATION_TYPE: Final = messaging_attributes.MESSAGING_OPERATION_TYPE
"""On the worker's task span: :data:`MESSAGING_PROCESS`."""
MESSAGING_PROCESS: Final = messaging_attributes.MessagingOperationTypeValues.PROCESS.value
"""``messaging.operation.type`` of a worker running a task it took from the queue."""

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
    OBSERVABLE_COUNTER,
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
