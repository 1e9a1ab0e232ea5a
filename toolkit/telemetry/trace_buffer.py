"""The slowest and the failed recent traces, kept in process: a tail-sampling span processor.

A trace's spans wait in ``pending`` until its local root ends (the request's server span,
whose parent, if any, is remote); the whole trace is then kept, or dropped at once: kept when
its root failed, or when it is among the ``slowest_per_route`` slowest of its route within the
window. A kept trace is stored as its JSON (what ``/stats`` serves), so its bytes are known
exactly; kept traces are bounded in count and bytes, and past either the fastest slow trace,
or the oldest failed one when failures hold half the room, goes first. Traces older than the
window are forgotten. A blocked loop's span, a root of its own, is never kept: the page shows
it in its loop section, not among the requests. Pending traces are bounded too (a stream whose
root never ends must not hold its spans forever): past the bound, the oldest pending trace is
dropped.

The processor runs in the span's thread at its end: a lock guards the shared state, and a
failure inside is logged once and never reaches the application.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_STACKTRACE
from opentelemetry.trace import StatusCode

from toolkit.telemetry import names

logger = logging.getLogger("toolkit.telemetry")

OTHER_ROUTE: Final = "other"
"""The route of kept traces past ``max_routes`` distinct ones."""
PENDING_TRACES: Final = 1024
"""Traces whose root has not ended yet, at most (requests in flight)."""
MAX_ATTRIBUTES: Final = 32
"""Attributes kept per span or event."""
MAX_EVENTS: Final = 16
"""Events kept per span."""
MAX_VALUE_CHARACTERS: Final = 512
"""Characters kept of a string attribute (a stack trace keeps more: ``MAX_STACK_CHARACTERS``)."""
MAX_STACK_CHARACTERS: Final = 4096
NOT_REQUESTS: Final = frozenset({names.EVENT_LOOP_BLOCKED_SPAN})
"""Root spans that are no request's trace, never kept: a blocked loop's span (a root of its
own, from the watchdog) belongs to the status page's loop section, not its slowest requests."""


@dataclass(frozen=True, slots=True)
class KeptTrace:
    """One kept trace: its ``route`` (its root's name), ``duration`` in seconds, whether its
    root ``failed``, when it ended (``ended``, wall-clock seconds) and ``body``, its JSON."""

    trace_id: str
    route: str
    duration: float
    failed: bool
    ended: float
    body: bytes

    def as_dict(self) -> dict[str, Any]:
        """The trace as ``/stats`` serves it: root name, times and every kept span."""
        found: dict[str, Any] = json.loads(self.body)
        return found


class TraceBuffer(SpanProcessor):
    """Tail-sampled recent traces: the slowest per route and every failed one of the window.

    Add it to an SDK ``TracerProvider`` (``install()`` adds it to the application's, or to the
    toolkit's own when the application has none). Every bound is the ``status`` setting of
    the same name.

    Args:
        window: seconds a kept trace is kept.
        slowest_per_route: slow traces kept per route within the window.
        max_traces / max_bytes: kept traces at most, and their JSON's bytes at most.
        max_spans: spans kept per trace (more are counted in its ``dropped_spans``).
        max_routes: routes told apart; more go under ``other``.
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        *,
        window: float = 300.0,
        slowest_per_route: int = 5,
        max_traces: int = 200,
        max_bytes: int = 4 * 1024 * 1024,
        max_spans: int = 256,
        max_routes: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.slowest_per_route = slowest_per_route
        self.max_traces = max_traces
        self.max_bytes = max_bytes
        self.max_spans = max_spans
        self.max_routes = max_routes
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[int, list[ReadableSpan]] = {}
        self._slowest: dict[str, list[KeptTrace]] = {}
        # Per route whose kept list is full: (its fastest duration, its oldest end). Until the
        # oldest leaves the window, a trace is kept only if slower than the fastest: what most
        # requests are told without looking at the list. Dropped whenever the list changes.
        self._floors: dict[str, tuple[float, float]] = {}
        self._failed: deque[KeptTrace] = deque()
        self._bytes = 0
        self._failed_bytes = 0
        self._slow_count = 0
        self._swept = 0.0
        self._closed = False
        self._warned = False
        self.dropped_traces = 0
        """Traces dropped for room (pending past its bound, or a kept one evicted)."""

    # --- SpanProcessor -------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        del span, parent_context

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._on_end(span)
        except Exception:  # observability never fails the application
            if not self._warned:
                self._warned = True
                logger.exception("the status page's trace buffer failed; traces may be missing")

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._slowest.clear()
            self._floors.clear()
            self._failed.clear()
            self._bytes = self._failed_bytes = self._slow_count = 0

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        del timeout_millis
        return True

    # --- reading -------------------------------------------------------------------------------

    def slowest(self) -> list[KeptTrace]:
        """The kept traces whose root did not fail, slowest first."""
        self._sweep(self._clock(), force=True)
        with self._lock:
            found = [trace for kept in self._slowest.values() for trace in kept]
        return sorted(found, key=lambda trace: -trace.duration)

    def failed(self) -> list[KeptTrace]:
        """The kept traces whose root failed, newest first."""
        self._sweep(self._clock(), force=True)
        with self._lock:
            return list(reversed(self._failed))

    @property
    def kept_bytes(self) -> int:
        """Bytes the kept traces take (their JSON)."""
        return self._bytes

    # --- the decision --------------------------------------------------------------------------

    def _on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or self._closed:
            return
        trace_id = context.trace_id
        parent = span.parent
        if parent is not None and not parent.is_remote:
            with self._lock:
                waiting = self._pending.get(trace_id)
                if waiting is None:
                    if len(self._pending) >= PENDING_TRACES:
                        del self._pending[next(iter(self._pending))]
                        self.dropped_traces += 1
                    waiting = self._pending[trace_id] = []
                waiting.append(span)
            return
        children: list[ReadableSpan] = []
        if self._pending:  # a trace of its root alone (most requests) waits for nothing
            with self._lock:
                children = self._pending.pop(trace_id, children)
        start, end, name = span.start_time, span.end_time, span.name
        if end is None or start is None or name in NOT_REQUESTS:
            return
        duration = (end - start) / 1e9
        failed = span.status.status_code is StatusCode.ERROR
        now = self._clock()
        if now - self._swept >= 1.0:
            self._sweep(now)
        route = name if name in self._slowest else self._route(name)
        if not failed and not self._would_keep(route, duration, now):
            return
        body = _trace_json(span, children, self.max_spans)
        if len(body) > self.max_bytes:
            self.dropped_traces += 1
            return
        kept = KeptTrace(f"{trace_id:032x}", route, duration, failed, now, body)
        with self._lock:
            if self._closed:
                return
            if failed:
                self._failed.append(kept)
                self._failed_bytes += len(body)
            else:
                slowest = self._slowest.setdefault(route, [])
                slowest.append(kept)
                self._floors.pop(route, None)
                self._slow_count += 1
                if len(slowest) > self.slowest_per_route:
                    self._drop_slow(min(slowest, key=lambda trace: trace.duration))
            self._bytes += len(body)
            self._bound()

    def _route(self, name: str) -> str:
        if name in self._slowest or len(self._slowest) < self.max_routes:
            return name
        return OTHER_ROUTE

    def _would_keep(self, route: str, duration: float, now: float) -> bool:
        before = now - self.window
        with self._lock:
            floor = self._floors.get(route)
            if floor is not None and floor[1] >= before:  # full, and none has left the window
                return duration > floor[0]
            slowest = self._slowest.get(route)
            if slowest is None:
                return True
            self._forget(slowest, before)
            if len(slowest) < self.slowest_per_route:
                return True
            fastest = min(trace.duration for trace in slowest)
            self._floors[route] = (fastest, min(trace.ended for trace in slowest))
            return duration > fastest

    def _forget(self, kept: list[KeptTrace], before: float) -> None:
        """Drop the traces of ``kept`` that ended ``before``; the lock is held."""
        for trace in [trace for trace in kept if trace.ended < before]:
            self._drop_slow(trace)

    def _sweep(self, now: float, *, force: bool = False) -> None:
        """Forget what left the window: at most once a second, unless ``force``."""
        if not force and now - self._swept < 1.0:
            return
        self._swept = now
        before = now - self.window
        with self._lock:
            while self._failed and self._failed[0].ended < before:
                self._evict_failed()
            for route, kept in list(self._slowest.items()):
                self._forget(kept, before)
                if not kept:
                    del self._slowest[route]

    def _bound(self) -> None:
        """Evict until the kept traces fit their count and bytes; the lock is held."""
        while True:
            count = len(self._failed) + self._slow_count
            if count <= self.max_traces and self._bytes <= self.max_bytes:
                return
            self.dropped_traces += 1
            failures_hold_half = (
                self._failed_bytes * 2 > self._bytes or len(self._failed) * 2 > count
            )
            fastest = min(
                (trace for kept in self._slowest.values() for trace in kept),
                key=lambda trace: trace.duration,
                default=None,
            )
            if self._failed and (failures_hold_half or fastest is None):
                self._evict_failed()
            elif fastest is not None:
                self._drop_slow(fastest)
            else:  # pragma: no cover - nothing kept, nothing over
                return

    def _drop_slow(self, trace: KeptTrace) -> None:
        self._slowest[trace.route].remove(trace)
        self._floors.pop(trace.route, None)
        self._slow_count -= 1
        self._bytes -= len(trace.body)

    def _evict_failed(self) -> None:
        oldest = self._failed.popleft()
        self._bytes -= len(oldest.body)
        self._failed_bytes -= len(oldest.body)


# --- the JSON form -----------------------------------------------------------------------------


def _trace_json(root: ReadableSpan, children: Sequence[ReadableSpan], max_spans: int) -> bytes:
    spans = sorted(children, key=lambda span: span.start_time or 0)
    kept = spans[: max(0, max_spans - 1)]
    start = root.start_time or 0
    end = root.end_time or start
    body = {
        "trace_id": f"{root.context.trace_id:032x}" if root.context else "",
        "name": root.name,
        "start": start / 1e9,
        "duration": (end - start) / 1e9,
        "failed": root.status.status_code is StatusCode.ERROR,
        "status_code": root.attributes.get(names.HTTP_RESPONSE_STATUS_CODE)
        if root.attributes
        else None,
        "spans": [_span_json(span, start) for span in (root, *kept)],
        "dropped_spans": len(spans) - len(kept),
    }
    return json.dumps(body, default=str, separators=(",", ":")).encode()


def _span_json(span: ReadableSpan, trace_start: int) -> dict[str, Any]:
    start = span.start_time or trace_start
    end = span.end_time or start
    parent = span.parent
    return {
        "span_id": f"{span.context.span_id:016x}" if span.context else "",
        "parent_id": f"{parent.span_id:016x}"
        if parent is not None and not parent.is_remote
        else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "start": (start - trace_start) / 1e9,
        "duration": (end - start) / 1e9,
        "failed": span.status.status_code is StatusCode.ERROR,
        "status_message": span.status.description,
        "attributes": _attributes(span.attributes),
        "events": [
            {
                "name": event.name,
                "at": (event.timestamp - trace_start) / 1e9,
                "attributes": _attributes(event.attributes),
            }
            for event in list(span.events)[:MAX_EVENTS]
        ],
    }


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {name: _value(name, value) for name, value in list(attributes.items())[:MAX_ATTRIBUTES]}


def _value(name: str, value: Any) -> Any:
    if isinstance(value, str):
        limit = MAX_STACK_CHARACTERS if name == EXCEPTION_STACKTRACE else MAX_VALUE_CHARACTERS
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, Iterable) and not isinstance(value, bytes):
        return [_value(name, item) for item in list(value)[:MAX_ATTRIBUTES]]
    return value
