"""The blocking-backend chat under a short load: without the toolkit, with install() alone, and
with the fixes the watchdog leads to.

    python -m examples blocking-backend [--duration 4]   # the three phases, then the table
    python -m examples blocking-backend --serve          # the fixed app, until Ctrl-C

Each phase runs ``examples/blocking_backend/app.py`` in its own uvicorn process and drives it
with 8 chat clients, each sending its next message as soon as the last was answered, and a
probe due every PROBE_INTERVAL on ``/health``: an instant route, so how late its answer comes
(from when it was due) is how long the event loop kept it waiting, the lag a user feels.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from examples._harness import (
    CALLS_PATH,
    ROOT,
    Metrics,
    Row,
    Server,
    Traffic,
    closed_loop,
    comparison,
    demo_main,
    drive,
    probe,
    send,
)
from examples.blocking_backend.app import OLD_MESSAGES

APP = "examples.blocking_backend.app:app"
CHATS = 8  # clients chatting back to back
PROBE_INTERVAL = 0.01  # seconds between two /health probes
PHASES: dict[str, tuple[Literal["before", "after"], dict[str, str]]] = {
    "before": ("before", {}),
    "install": ("after", {"BLOCKING_BACKEND_FIXES": "0"}),  # install() and nothing else
    "after": ("after", {}),
}
MESSAGES = (
    "where is my order?",
    "the parcel says delivered but it is not here",
    "can I change the delivery address?",
    "I want a refund for order 4411",
)


@dataclass
class Phase:
    """What one phase's clients saw, what it cost the model, and (with the toolkit) what the
    server's loop monitor reported."""

    chats: Traffic = field(default_factory=Traffic)
    probes: Traffic = field(default_factory=Traffic)
    model_calls: int = 0
    loop: dict[str, Any] = field(default_factory=dict)  # /_toolkit/stats "loop"
    metrics: Metrics | None = None  # with the toolkit, its /metrics at the end

    def offloaded(self) -> dict[str, tuple[float, float, float]]:
        """Per offloaded function: calls, mean seconds on the thread, mean seconds waiting
        for one (the toolkit.offload.* histograms)."""
        if self.metrics is None:
            return {}
        calls = self.metrics.by("toolkit_offload_duration_seconds_count", "toolkit_offload_name")
        took = self.metrics.by("toolkit_offload_duration_seconds_sum", "toolkit_offload_name")
        waited = self.metrics.by("toolkit_offload_wait_time_seconds_sum", "toolkit_offload_name")
        return {
            name: (count, took.get(name, 0.0) / count, waited.get(name, 0.0) / count)
            for name, count in sorted(calls.items())
            if count
        }

    @property
    def blocks(self) -> int:
        return int(self.loop.get("blocked_total", 0))

    def causes(self) -> dict[str, int]:
        """The causes of the last blocks reported (``code``, ``descheduled``, ``gc``, ...)."""
        return dict(Counter(block["cause"] for block in self.loop.get("blocked", [])))

    def code_blocks(self) -> list[str]:
        """The blocking calls of the last blocks caused by code on the loop (not a busy
        machine's scheduler, nor the garbage collector)."""
        return [
            call
            for block, call in zip(self.loop.get("blocked", []), self._calls(), strict=True)
            if block["cause"] == "code" and call
        ]

    def blocking_calls(self) -> list[str]:
        """``file:line in function`` of each reported block's blocking call, newest first."""
        return [call for call in self._calls() if call]

    def _calls(self) -> list[str]:
        return [
            f"{os.path.relpath(where['file'], ROOT)}:{where['line']} in {where['function']}"
            if (where := block.get("blocking"))
            else ""
            for block in self.loop.get("blocked", [])
        ]


@dataclass
class Demo:
    duration: float
    before: Phase
    install: Phase
    after: Phase


def run_phase(name: str, duration: float) -> Phase:
    mode, env = PHASES[name]
    phase = Phase()

    async def chat(http: httpx.AsyncClient, number: int) -> None:
        text = MESSAGES[phase.chats.requests % len(MESSAGES)]
        path = f"/conversations/c-{number}/messages"
        await send(http, "POST", path, phase.chats, json={"text": text})

    with Server(APP, mode=mode, env=env) as server:
        lag = probe(PROBE_INTERVAL, "/health", phase.probes)
        drive(server.url, duration, [*closed_loop(CHATS, chat), lag])
        calls: Any = server.get_json(CALLS_PATH)
        phase.model_calls = int(calls["model"])
        if mode == "after":
            stats = server.read_status("/stats?traces=0").raise_for_status().json()
            phase.loop = stats["loop"]
            phase.metrics = server.metrics()
    return phase


def run_demo(duration: float) -> Demo:
    return Demo(duration, *(run_phase(phase, duration) for phase in PHASES))


def rows(demo: Demo) -> list[Row]:
    before, after, seconds = demo.before, demo.after, demo.duration

    def both(figure: Any) -> tuple[float, float]:
        return float(figure(before)), float(figure(after))

    return [
        Row("chats answered", *both(lambda p: p.chats.ok)),
        Row("chat throughput", *both(lambda p: p.chats.throughput(seconds)), "/s", 1),
        Row("chat p50", *both(lambda p: p.chats.p50 * 1000), "ms"),
        Row("chat p95", *both(lambda p: p.chats.p95 * 1000), "ms"),
        Row("chat error rate", *both(lambda p: p.chats.error_rate * 100), "%", 1),
        Row("loop lag p50 (probe)", *both(lambda p: p.probes.p50 * 1000), "ms", 1),
        Row("loop lag p95 (probe)", *both(lambda p: p.probes.p95 * 1000), "ms", 1),
        Row("loop lag max (probe)", *both(lambda p: p.probes.max * 1000), "ms", 1),
        Row("model calls", *both(lambda p: p.model_calls)),
    ]


def _lag(phase: Phase) -> str:
    lag = phase.loop.get("lag") or {}
    p99, most = lag.get("p99"), lag.get("max")
    if p99 is None or most is None:
        return "no lag figures"
    return f"lag p99 {p99 * 1000:.1f} ms, max {most * 1000:.1f} ms"


def report(demo: Demo) -> str:
    watched = demo.install
    found = watched.blocking_calls()
    lines = [
        f"examples/blocking_backend/app.py, {demo.duration:g} s of load per phase: {CHATS} chat "
        "clients back to back,",
        f"  and a /health probe due every {PROBE_INTERVAL * 1000:.0f} ms (its lag: how late the "
        "answer comes, from when it was due)",
        f"  the database: sqlite, {OLD_MESSAGES:,} messages, no index on the conversation; the "
        "model: a 503 one call in 5",
        "before:   the app alone: sqlite3 called inside the async handlers, no retries",
        "install:  toolkit.install() alone: the loop monitor's watchdog reports what blocks",
        "after:    @toolkit.offload on the two sqlite functions (the toolkit's thread pool),",
        "          @toolkit.resilient(retries=RetryPolicy(on=ProviderError, attempts=4)) on the",
        "          model call",
        "",
        *comparison(rows(demo)),
        "",
        f"install: the watchdog reported {watched.blocks} blocked loops "
        f"(its {_lag(watched)}); the last {len(watched.loop.get('blocked', []))}: "
        f"{_causes(watched)}; the blocking call:",
        *(f"  {call}  (x{found.count(call)})" for call in _distinct(found)),
        f"after: {demo.after.blocks} blocked loops reported ({_lag(demo.after)}); the last "
        f"{len(demo.after.loop.get('blocked', []))}: {_causes(demo.after)}"
        + (", by code at:" if demo.after.code_blocks() else ""),
        *(f"  {call}" for call in _distinct(demo.after.code_blocks())),
        "after: on the offload pool: "
        + "; ".join(
            f"{name} {calls:.0f} calls, {took * 1000:.1f} ms each, waited {wait * 1000:.2f} ms"
            for name, (calls, took, wait) in demo.after.offloaded().items()
        ),
        "(code: the loop thread ran the blocking call; descheduled: it waited for a CPU, the",
        "machine busy; see docs/telemetry.md, 'What explains a block')",
        "(the toolkit's figures: GET /_toolkit/stats, 'loop', read with the read-only token)",
    ]
    return "\n".join(lines)


def _causes(phase: Phase) -> str:
    causes = phase.causes()
    return ", ".join(f"{cause} {count}" for cause, count in sorted(causes.items())) or "none"


def _distinct(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def main(argv: Sequence[str] | None = None) -> int:
    return demo_main(
        argv,
        prog="python -m examples blocking-backend",
        description=__doc__,
        run=run_demo,
        report=report,
        serve=lambda port: Server(APP, mode="after", port=port),
    )
