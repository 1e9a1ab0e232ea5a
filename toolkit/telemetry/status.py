"""The status board: what the status page, ``/stats`` and ``agent-toolkit top`` show, kept in
process so that none of them needs a collector.

It holds the recent percentiles per route (fed by :class:`TelemetryMiddleware` on every
request, sampled or not), per agent and per model (:class:`AgentStats`, from the GenAI spans),
the slowest and failed recent traces (:class:`TraceBuffer`), the sections other capabilities
report (caches, breakers, pools: ``install()`` adds their readers), and the event-loop
monitor's figures (:class:`~toolkit.telemetry.loop.LoopMonitor`: recent lag, tasks, the last
blocks with the blocking line), connected at :attr:`StatusBoard.loop_monitor`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

from toolkit.settings import StatusSettings
from toolkit.telemetry.agent_stats import AgentStats
from toolkit.telemetry.latency import LatencyTable, Summary
from toolkit.telemetry.loop import BlockedLoop, LoopMonitor, StackFrame
from toolkit.telemetry.trace_buffer import TraceBuffer

logger = logging.getLogger("toolkit.telemetry")

OTHER_ROUTE: Final = ("", "other")
"""The (method, route) that requests past ``status.max_routes`` distinct ones count under."""
DEFAULT_TRACES: Final = 20
"""Traces of each kind (slowest, failed) a snapshot carries unless asked otherwise."""
_SAMPLES_EVERY_ROOT: Final = ("AlwaysOnSampler", "ParentBased{root:AlwaysOnSampler,")
"""How the samplers that keep every trace started here describe themselves."""


class StatusBoard:
    """The figures of one app's status page (``install()`` makes it: ``toolkit.status``).

    Args:
        settings: the ``status`` section (window, bounds); the defaults when None.
        traces: keep the slowest and failed traces (a :class:`TraceBuffer`); ``install()``
            asks for them unless an OTLP endpoint is configured.
    """

    def __init__(self, settings: StatusSettings | None = None, *, traces: bool = True) -> None:
        self.settings = settings = settings or StatusSettings.model_validate({})
        self.requests: LatencyTable[tuple[str, str]] = LatencyTable(
            window=settings.window, max_keys=settings.max_routes, other=OTHER_ROUTE
        )
        self.operations = AgentStats(window=settings.window, max_names=settings.max_names)
        self.traces: TraceBuffer | None = None
        if traces:
            self.traces = TraceBuffer(
                window=settings.window,
                slowest_per_route=settings.slowest_per_route,
                max_traces=settings.max_traces,
                max_bytes=settings.max_bytes,
                max_spans=settings.max_spans,
                max_routes=settings.max_routes,
            )
        self.sampler: str | None = None
        """The tracer provider's sampler, as it describes itself (``install()`` reads it);
        None when unknown (a provider that is not the SDK's)."""
        self.loop_monitor: LoopMonitor | None = None
        """The event-loop monitor the page shows (``install()`` connects the one it starts);
        the page says "not running" while this is None or the monitor is stopped."""
        self._sections: dict[str, Callable[[], list[dict[str, Any]]]] = {}

    @property
    def span_processors(self) -> list[SpanProcessor]:
        """What to add to the tracer provider: the agent figures, and the trace buffer."""
        return [self.operations, *([self.traces] if self.traces is not None else [])]

    def read_sampler(self, provider: trace.TracerProvider) -> None:
        """Note ``provider``'s sampler, so the page can say when agent figures, which come
        from spans, may count only the sampled runs."""
        sampler = getattr(provider, "sampler", None)
        describe = getattr(sampler, "get_description", None)
        self.sampler = str(describe()) if callable(describe) else None

    def record_request(self, method: str, route: str, seconds: float, failed: bool) -> None:
        """One request of ``route`` (a template) that took ``seconds``; the request path's
        only call (a few dict updates)."""
        self.requests.record((method, route), seconds, failed)

    def add_section(self, name: str, rows: Callable[[], list[dict[str, Any]]]) -> None:
        """Show ``rows()`` (JSON objects) as the section ``name`` of every snapshot."""
        self._sections[name] = rows

    def snapshot(self, *, traces: int = DEFAULT_TRACES) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data, with up to ``traces`` traces of each
        kind (slowest, failed)."""
        data: dict[str, Any] = {
            "generated_at": time.time(),
            "window": self.settings.window,
            "routes": [
                {"method": method, "route": route, **_figures(summary)}
                for (method, route), summary in self.requests.summaries()
            ],
            "agents": [
                {"agent": name, **_figures(summary), **_usage(summary)}
                for name, summary in self.operations.agents.summaries()
            ],
            "models": [
                {"model": name, **_figures(summary), **_usage(summary)}
                for name, summary in self.operations.models.summaries()
            ],
            "spans": {
                "gen_ai": self.operations.spans,
                "sampler": self.sampler,
                "samples_all": self.sampler is not None
                and self.sampler.startswith(_SAMPLES_EVERY_ROOT),
            },
            "loop": self._loop(),
            "traces": self._traces(traces),
        }
        failures: dict[str, str] = {}
        for name, rows in self._sections.items():
            try:
                data[name] = rows()
            except Exception as exc:  # one broken section leaves the others
                logger.exception("status section %r failed", name)
                data[name] = []
                failures[name] = f"{type(exc).__name__}: {exc}"
        if failures:
            data["failures"] = failures
        return data

    def _loop(self) -> dict[str, Any]:
        monitor = self.loop_monitor
        if monitor is None:
            return {"running": False}
        try:
            lag = monitor.lag_summary()
            return {
                "running": monitor.running,
                "recording": monitor.recording,
                "lag": {"count": lag.count, "p50": lag.p50, "p99": lag.p99, "max": lag.max},
                "tasks": monitor.tasks,
                "blocked_total": monitor.blocked,
                "blocked": [_block(block) for block in reversed(monitor.recent_blocks())],
            }
        except Exception as exc:  # the page still shows everything else
            logger.exception("the event-loop monitor failed to report")
            return {"running": True, "failure": f"{type(exc).__name__}: {exc}"}

    def _traces(self, limit: int) -> dict[str, Any]:
        buffer = self.traces
        if buffer is None:
            return {"kept": False, "slowest": [], "failed": []}
        slowest, failed = buffer.slowest(), buffer.failed()
        return {
            "kept": True,
            "count": len(slowest) + len(failed),
            "bytes": buffer.kept_bytes,
            "max_bytes": buffer.max_bytes,
            "dropped": buffer.dropped_traces,
            "slowest": [trace.as_dict() for trace in slowest[:limit]],
            "failed": [trace.as_dict() for trace in failed[:limit]],
        }


def _block(block: BlockedLoop) -> dict[str, Any]:
    """One blocked-loop report, newest first on the page: ``blocking`` is the call that
    held the loop (the innermost frame of the application's code), ``hint`` what would fix
    it (``toolkit.event_loop.blocked.hint``: offload it) when the application's call blocked."""
    where = block.blocking
    return {
        "started": block.started,
        "duration": block.duration,
        "cause": block.cause,
        "task": block.task,
        "blocking": None if where is None else _frame(where),
        "stack": [_frame(frame) for frame in block.stack],
        "gc_time": block.gc_time,
        "cpu_time": block.cpu_time,
        "descheduled_time": block.descheduled_time,
        "hint": block.hint,
    }


def _frame(frame: StackFrame) -> dict[str, Any]:
    return {
        "file": frame.file,
        "line": frame.line,
        "function": frame.function,
        "source": frame.source,
    }


def _figures(summary: Summary) -> dict[str, Any]:
    return {
        "count": summary.count,
        "throughput": summary.throughput,
        "errors": summary.errors,
        "error_rate": summary.error_rate,
        "p50": summary.p50,
        "p95": summary.p95,
        "p99": summary.p99,
        "max": summary.max,
    }


def _usage(summary: Summary) -> dict[str, Any]:
    return {
        "input_tokens": summary.input_tokens,
        "output_tokens": summary.output_tokens,
        "cost": summary.cost,
    }
