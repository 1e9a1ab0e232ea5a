"""The status board: what the status page, ``/stats`` and ``agent-toolkit top`` show, kept in
process so that none of them needs a collector.

It holds the recent percentiles per route (fed by :class:`TelemetryMiddleware` on every
request, sampled or not), per agent and per model (:class:`AgentStats`, from the GenAI spans),
the slowest and failed recent traces (:class:`TraceBuffer`), the sections other capabilities
report (caches, breakers, pools: ``install()`` adds their readers), and the event-loop
monitor's figures through :class:`LoopHealthSource`, "not running" until one is connected at
:attr:`StatusBoard.loop_monitor`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from opentelemetry.sdk.trace import SpanProcessor

from toolkit.settings import StatusSettings
from toolkit.telemetry.agent_stats import AgentStats
from toolkit.telemetry.latency import LatencyTable, Summary
from toolkit.telemetry.trace_buffer import TraceBuffer

logger = logging.getLogger("toolkit.telemetry")

OTHER_ROUTE: Final = ("", "other")
"""The (method, route) that requests past ``status.max_routes`` distinct ones count under."""
DEFAULT_TRACES: Final = 20
"""Traces of each kind (slowest, failed) a snapshot carries unless asked otherwise."""


@dataclass(frozen=True, slots=True)
class BlockedLoop:
    """One time the event loop did not turn: when (wall-clock seconds), for how long, the
    task that ran and the stack it was blocked in."""

    at: float
    seconds: float
    stack: str
    task: str | None = None


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """The event loop lately: lag percentiles and the longest (seconds), running tasks, and
    the last blocking events, newest first."""

    lag_p50: float | None
    lag_p99: float | None
    lag_max: float | None
    tasks: int
    blocked: Sequence[BlockedLoop] = field(default_factory=tuple)


class LoopHealthSource(Protocol):
    """What the event-loop monitor offers the status board: its figures now. Called from the
    event loop at each read of the page or ``/stats``; it must be quick and never block."""

    def loop_health(self) -> LoopHealth: ...


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
        self.loop_monitor: LoopHealthSource | None = None
        """The event-loop monitor's figures: connect it here (``install()`` does, once the
        monitor exists); the page says "not running" while this is None."""
        self._sections: dict[str, Callable[[], list[dict[str, Any]]]] = {}

    @property
    def span_processors(self) -> list[SpanProcessor]:
        """What to add to the tracer provider: the agent figures, and the trace buffer."""
        return [self.operations, *([self.traces] if self.traces is not None else [])]

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
            health = monitor.loop_health()
        except Exception as exc:  # the page still shows everything else
            logger.exception("the event-loop monitor failed to report")
            return {"running": True, "failure": f"{type(exc).__name__}: {exc}"}
        return {
            "running": True,
            "lag": {"p50": health.lag_p50, "p99": health.lag_p99, "max": health.lag_max},
            "tasks": health.tasks,
            "blocked": [
                {"at": b.at, "seconds": b.seconds, "task": b.task, "stack": b.stack}
                for b in health.blocked
            ],
        }

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
