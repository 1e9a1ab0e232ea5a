"""The event-loop health names: the loop monitor's metrics, its blocked-loop span and the
span's attributes (:mod:`toolkit.telemetry.loop`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.EVENT_LOOP_LAG_METRIC``): code uses them from there, as every other name.

A probe on the loop measures how late it runs; a watchdog thread samples the loop thread's
stack when the loop has not turned for the blocked threshold, and reports the block once the
loop turns again: a span dated back to when the loop stopped turning, a count, a warning.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv.attributes import code_attributes

from toolkit.telemetry.metric import HISTOGRAM, OBSERVABLE_COUNTER, OBSERVABLE_GAUGE, Metric

EVENT_LOOP_LAG_BUCKETS: Final = (
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
    2.5,
    5.0,
)
"""Seconds: from a free loop (under a millisecond) to one blocked for seconds."""

CODE_FILE_PATH: Final = code_attributes.CODE_FILE_PATH
"""On a blocked-loop span: the file of the innermost application frame, the blocking call."""
CODE_LINE_NUMBER: Final = code_attributes.CODE_LINE_NUMBER
"""On a blocked-loop span: the line of that call."""
CODE_FUNCTION_NAME: Final = code_attributes.CODE_FUNCTION_NAME
"""On a blocked-loop span: the function that line is in."""
CODE_STACKTRACE: Final = code_attributes.CODE_STACKTRACE
"""On a blocked-loop span: the sampled stack, application frames (and the innermost frame),
outermost first, at most ``event_loop.stack_depth`` of them."""
EVENT_LOOP_TASK: Final = "toolkit.event_loop.task"
"""On a blocked-loop span: the asyncio task that was running (its name and coroutine)."""
EVENT_LOOP_BLOCKED_DURATION: Final = "toolkit.event_loop.blocked.duration"
"""On a blocked-loop span: seconds the loop did not turn (the span's own duration)."""
EVENT_LOOP_BLOCKED_CAUSE: Final = "toolkit.event_loop.blocked.cause"
"""What explains a block: one of :data:`EVENT_LOOP_BLOCKED_CAUSES` (on the count too)."""
EVENT_LOOP_BLOCKED_GC_TIME: Final = "toolkit.event_loop.blocked.gc_time"
"""On a blocked-loop span: seconds of garbage collection inside the block."""
EVENT_LOOP_BLOCKED_CPU_TIME: Final = "toolkit.event_loop.blocked.cpu_time"
"""On a blocked-loop span: CPU seconds the loop thread used across the block."""
EVENT_LOOP_BLOCKED_DESCHEDULED_TIME: Final = "toolkit.event_loop.blocked.descheduled_time"
"""On a blocked-loop span: seconds the loop thread was not scheduled inside the block: runnable
but waiting for a CPU (Linux), or the whole process stopped (the watchdog could not run
either)."""
EVENT_LOOP_BLOCKED_HINT: Final = "toolkit.event_loop.blocked.hint"
"""On a blocked-loop span whose cause is ``code`` or ``waiting``: the fix, one line (run the
blocking call with ``@toolkit.offload`` or ``toolkit.run_sync``)."""
EVENT_LOOP_BLOCKED_SUPPRESSED: Final = "toolkit.event_loop.blocked.suppressed"
"""On a blocked-loop span: blocks since the previous span that got none (``spans_per_minute``)."""

EVENT_LOOP_GC: Final = "gc"
"""Garbage collection took most of the block."""
EVENT_LOOP_DESCHEDULED: Final = "descheduled"
"""The process was not running for most of the block (the machine, a CPU quota, a pause)."""
EVENT_LOOP_CODE: Final = "code"
"""The loop thread was running code on the CPU: a computation, a call holding the GIL."""
EVENT_LOOP_WAITING: Final = "waiting"
"""The loop thread was off the CPU in a blocking call: a sleep, a lock, disk or network I/O
(a synchronous sqlite3 write, ``requests.get``)."""
EVENT_LOOP_BLOCKED_CAUSES: Final = (
    EVENT_LOOP_GC,
    EVENT_LOOP_DESCHEDULED,
    EVENT_LOOP_CODE,
    EVENT_LOOP_WAITING,
)

EVENT_LOOP_BLOCKED_SPAN: Final = "toolkit.event_loop.blocked"
"""INTERNAL root span of a blocked loop, from when the loop stopped turning (at the latest) to
when it turned again, with the blocking stack, the task and the cause (rate-limited)."""

EVENT_LOOP_LAG: Final = "toolkit.event_loop.lag"
"""How late the loop ran the probe: its scheduling delay, every ``probe_interval``."""
EVENT_LOOP_LAG_METRIC: Final = Metric(
    EVENT_LOOP_LAG,
    HISTOGRAM,
    unit="s",
    description="How late the event loop ran a callback that was due.",
    attributes=(),
    buckets=EVENT_LOOP_LAG_BUCKETS,
)

EVENT_LOOP_TASKS: Final = "toolkit.event_loop.tasks"
"""asyncio tasks not done on the loop, counted about once a second."""
EVENT_LOOP_TASKS_METRIC: Final = Metric(
    EVENT_LOOP_TASKS,
    OBSERVABLE_GAUGE,
    unit="{task}",
    description="asyncio tasks not yet done on the event loop.",
    attributes=(),
)

EVENT_LOOP_BLOCKED: Final = "toolkit.event_loop.blocked"
"""Blocks of the loop past ``blocked_threshold``, by cause (every one, spans or not)."""
EVENT_LOOP_BLOCKED_METRIC: Final = Metric(
    EVENT_LOOP_BLOCKED,
    OBSERVABLE_COUNTER,
    unit="{event}",
    description="Times the event loop did not turn for the blocked threshold, by cause.",
    attributes=(EVENT_LOOP_BLOCKED_CAUSE,),
)
