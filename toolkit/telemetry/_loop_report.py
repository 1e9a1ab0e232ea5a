"""A blocked loop, reported: the record, its span, its warning, its count, the last few kept.

Runs on the watchdog thread, but for the span: it is recorded on the loop it reports (once
the loop turns again, a few tens of microseconds), as the application's spans are, since an
SDK draws span ids from the global ``random`` state, which a background thread must not move
under the application's feet. Spans and warnings are each bounded per minute; the count and
the recent list take every block.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from toolkit.telemetry import names
from toolkit.telemetry._loop_stack import StackFrame, blocking_frame, is_application
from toolkit.telemetry.counts import Counts

logger = logging.getLogger("toolkit.telemetry.loop")

RECENT_BLOCKS: Final = 10
"""Blocked-loop reports a monitor keeps for :meth:`~toolkit.LoopMonitor.recent_blocks`."""
OFFLOAD_HINT: Final = (
    "move the blocking call off the loop: decorate its function with @toolkit.offload, "
    "or await toolkit.run_sync(fn, *args)"
)
"""The fix a report of a block in code points at (causes ``code`` and ``waiting``: a GC
pause or a descheduled process is not the application's call)."""
_OFFLOADABLE: Final = frozenset({names.EVENT_LOOP_CODE, names.EVENT_LOOP_WAITING})


@dataclass(frozen=True, slots=True)
class BlockedLoop:
    """One time the event loop did not turn for the blocked threshold.

    Attributes:
        started: when the loop stopped turning, at the latest (Unix time, seconds); within
            one probe interval after the blocking call began.
        duration: seconds from ``started`` until the loop turned again.
        cause: ``gc``, ``descheduled``, ``code`` or ``waiting`` (see docs/telemetry.md).
        gc_time: seconds of garbage collection inside the block.
        cpu_time: CPU seconds the loop thread used across the block.
        descheduled_time: seconds the loop thread was not scheduled inside the block: waiting
            for a CPU, or the process stopped.
        task: the asyncio task that was running, ``Task-7 (write_note)``; None if none was,
            or the stack was not sampled.
        stack: the sampled frames, outermost first: the application's and the innermost one;
            empty when the block ended before the watchdog could sample it.
    """

    started: float
    duration: float
    cause: str
    gc_time: float
    cpu_time: float
    descheduled_time: float
    task: str | None
    stack: tuple[StackFrame, ...]

    @property
    def blocking(self) -> StackFrame | None:
        """The blocking call: the innermost application frame, else the innermost one."""
        return blocking_frame(self.stack)

    @property
    def hint(self) -> str | None:
        """What would fix it (:data:`OFFLOAD_HINT`) when a call of the application blocked
        (cause ``code`` or ``waiting``, an application frame sampled); None otherwise."""
        where = self.blocking
        if self.cause in _OFFLOADABLE and where is not None and is_application(where.file):
            return OFFLOAD_HINT
        return None

    def format_stack(self) -> str:
        """The stack as a traceback shows it, outermost first."""
        return "\n".join(str(frame) for frame in self.stack)

    def describe(self) -> str:
        """One line: how long, where, which task, what explains it."""
        where = self.blocking
        at = f" at {where.place} in {where.function}" if where else " (stack not sampled)"
        if where is not None and where.source:
            at += f": {where.source}"
        task = f"task {self.task}; " if self.task else ""
        return (
            f"event loop blocked for {self.duration * 1000:.0f} ms{at} ({task}cause "
            f"{self.cause}: loop thread CPU {self.cpu_time * 1000:.0f} ms, GC "
            f"{self.gc_time * 1000:.0f} ms, not scheduled {self.descheduled_time * 1000:.0f} ms)"
        )


class PerMinute:
    """At most ``limit`` events a minute, refilled continuously (a token bucket)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._tokens = float(limit)
        self._at = clock()
        self.suppressed = 0
        """Events refused since the last one allowed."""

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._limit, self._tokens + (now - self._at) * self._limit / 60)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.suppressed += 1
        return False


class Reporter:
    """Where every blocked-loop report goes: the count by cause, the recent list, and, within
    their bounds, a back-dated span and a warning."""

    def __init__(
        self,
        tracer: trace.Tracer,
        counts: Counts,
        *,
        spans_per_minute: int,
        logs_per_minute: int,
        on_loop: Callable[[Callable[[], None]], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracer = tracer
        self._on_loop = on_loop
        self._counts = counts
        self._spans = PerMinute(spans_per_minute, clock)
        self._logs = PerMinute(logs_per_minute, clock)
        self.recent: deque[BlockedLoop] = deque(maxlen=RECENT_BLOCKS)
        self.blocked = 0

    def report(self, block: BlockedLoop) -> None:
        self.blocked += 1
        self.recent.append(block)
        self._counts.add(block.cause, {names.EVENT_LOOP_BLOCKED_CAUSE: block.cause})
        if self._spans.allow():
            suppressed, self._spans.suppressed = self._spans.suppressed, 0
            # RuntimeError: the loop closed meanwhile; no span, the rest stands.
            with contextlib.suppress(RuntimeError):
                self._on_loop(lambda: self._span(block, suppressed))
        if self._logs.allow():
            suppressed, self._logs.suppressed = self._logs.suppressed, 0
            more = f"; {suppressed} more not logged before it" if suppressed else ""
            stack = " > ".join(f"{f.place} in {f.function}" for f in block.stack)
            fix = f"; fix: {block.hint}" if block.hint else ""
            logger.warning("%s; stack: %s%s%s", block.describe(), stack or "none", fix, more)

    def _span(self, block: BlockedLoop, suppressed: int) -> None:
        start = int(block.started * 1e9)
        attributes: dict[str, str | int | float] = {
            names.EVENT_LOOP_BLOCKED_DURATION: block.duration,
            names.EVENT_LOOP_BLOCKED_CAUSE: block.cause,
            names.EVENT_LOOP_BLOCKED_GC_TIME: block.gc_time,
            names.EVENT_LOOP_BLOCKED_CPU_TIME: block.cpu_time,
            names.EVENT_LOOP_BLOCKED_DESCHEDULED_TIME: block.descheduled_time,
            names.EVENT_LOOP_BLOCKED_SUPPRESSED: suppressed,
        }
        if block.task is not None:
            attributes[names.EVENT_LOOP_TASK] = block.task
        where = block.blocking
        if where is not None:
            attributes[names.CODE_FILE_PATH] = where.file
            attributes[names.CODE_LINE_NUMBER] = where.line
            attributes[names.CODE_FUNCTION_NAME] = where.function
            attributes[names.CODE_STACKTRACE] = block.format_stack()
        if block.hint is not None:
            attributes[names.EVENT_LOOP_BLOCKED_HINT] = block.hint
        span = self._tracer.start_span(
            names.EVENT_LOOP_BLOCKED_SPAN,
            context=Context(),  # a root: the watchdog thread has no request of its own
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start,
        )
        span.end(start + int(block.duration * 1e9))
