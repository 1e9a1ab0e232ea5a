"""The multi-agent chat under a steady load with a flaky provider, without the toolkit and then
with it.

    python -m examples multi-agent-chat [--duration 4]   # both phases, then the tables
    python -m examples multi-agent-chat --serve          # the app with the toolkit, until Ctrl-C

Each phase runs ``examples/multi_agent_chat/app.py`` in its own uvicorn process and drives it
with ``USERS`` users, each sending a chat every ``INTERVAL`` in a session of their own. The
provider fails ``FAILURE_RATE`` of the calls and hangs on ``STALL_RATE`` of them, in both
phases. A chat is answered when it ends well: a 200 JSON reply (before), or an SSE stream
that reached its ``done`` event (after).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx

from examples._harness import (
    Client,
    Metrics,
    Row,
    Server,
    comparison,
    demo_main,
    drive,
    every,
)
from examples.multi_agent_chat.app import FAILURE_RATE, STALL, STALL_RATE

APP = "examples.multi_agent_chat.app:app"
USERS = 8
INTERVAL = 0.8  # seconds between one user's chats
MESSAGES = (
    "I adopted a cat called Miso last week",
    "what should I cook tonight? I like lentils",
    "my email is ana.lopez@example.com, note it",
    "I am training for a 10k run in April",
    "what is my cat called again?",
    "call me on +33 6 12 34 56 78 tomorrow",
)
DRAIN_TIMEOUT = 15.0  # seconds the demo waits for the after server's deferred memory writes
AGENTS = ("privacy", "retrieval", "conversation", "memory-manager")


@dataclass(frozen=True)
class Chat:
    """One chat as its user saw it: answered or not, when the first token and the end came
    (seconds after sending)."""

    status: int  # the HTTP status, 0 when no response came
    answered: bool
    first_token: float
    latency: float


@dataclass
class Phase:
    chats: list[Chat] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)  # the provider's calls, per model
    metrics: Metrics | None = None  # the after server's, once its memory writes drained
    stats: dict[str, Any] = field(default_factory=dict)  # its /_toolkit/stats
    status_page: int = 0

    @property
    def provider_calls(self) -> int:
        """Every model's calls (an embedder's count of texts left out)."""
        return sum(n for name, n in self.calls.items() if not name.endswith(".texts"))

    @property
    def answered(self) -> list[Chat]:
        return [chat for chat in self.chats if chat.answered]

    @property
    def failed(self) -> int:
        return len(self.chats) - len(self.answered)

    def mean(self, figure: str) -> float:
        values = [getattr(chat, figure) for chat in self.answered]
        return sum(values) / len(values) if values else float("nan")

    def max(self, figure: str) -> float:
        return max((getattr(chat, figure) for chat in self.answered), default=float("nan"))


@dataclass(frozen=True)
class Demo:
    duration: float
    before: Phase
    after: Phase
    status_url: str


async def chat(http: httpx.AsyncClient, session_id: str, message: str) -> Chat:
    """Send one chat and read its answer, JSON or SSE, noting when the first token came."""
    started = time.perf_counter()
    first: float | None = None
    answered, status = False, 0
    try:
        async with http.stream(
            "POST", "/chat", json={"message": message, "session_id": session_id}
        ) as response:
            status = response.status_code
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                async for line in response.aiter_lines():
                    if line == "event: token" and first is None:
                        first = time.perf_counter() - started
                    answered = answered or line == "event: done"
            else:
                await response.aread()
                answered = status == 200
    except httpx.HTTPError:
        answered = False
    latency = time.perf_counter() - started
    # A JSON answer arrives whole: its first token comes with its last.
    return Chat(status, answered, latency if first is None else first, latency)


def _user(number: int, out: Phase) -> Client:
    sent = 0

    async def send(http: httpx.AsyncClient) -> None:
        nonlocal sent
        message = MESSAGES[(number + sent) % len(MESSAGES)]
        sent += 1
        out.chats.append(await chat(http, f"session-{number}", message))

    return every(INTERVAL, send)


def deferred_tasks(metrics: Metrics) -> dict[str, float]:
    """The after server's memory writes that ended, by outcome."""
    return metrics.by("toolkit_deferred_tasks_total", "toolkit_task_outcome")


def fanout_branches(metrics: Metrics) -> dict[str, dict[str, float]]:
    """The after server's privacy and retrieval branches: branch -> outcome -> count."""
    out: dict[str, dict[str, float]] = {}
    for labels, value in metrics.samples("toolkit_fanout_branch_duration_seconds_count"):
        outcomes = out.setdefault(labels["toolkit_fanout_branch"], {})
        outcomes[labels["toolkit_fanout_outcome"]] = value
    return out


def conversation_streams(metrics: Metrics) -> dict[str, float]:
    """The after server's conversation streams that ended, by outcome (complete, fallback,
    ...)."""
    return metrics.by(
        "toolkit_resilience_stream_duration_seconds_count", "toolkit_resilience_stream_outcome"
    )


def _drained(server: Server, handed_off: int) -> Metrics:
    """The server's metrics once every memory write it was handed has ended (or, past
    ``DRAIN_TIMEOUT``, as they are)."""
    give_up = time.monotonic() + DRAIN_TIMEOUT
    while True:
        metrics = server.metrics()
        if sum(deferred_tasks(metrics).values()) >= handed_off or time.monotonic() > give_up:
            return metrics
        time.sleep(0.1)


def _phase(mode: Literal["before", "after"], duration: float) -> tuple[Phase, str]:
    out = Phase()
    with Server(APP, mode=mode) as server:
        drive(server.url, duration, [_user(number, out) for number in range(USERS)])
        if mode == "after":
            out.metrics = _drained(server, len(out.answered))
            out.stats = server.read_status("/stats?traces=0").raise_for_status().json()
            out.status_page = server.read_status("/status").status_code
        out.calls = cast(dict[str, int], server.get_json("/_demo/calls"))
    return out, server.status_url


def run(duration: float) -> Demo:
    before, _ = _phase("before", duration)
    after, status_url = _phase("after", duration)
    return Demo(duration, before, after, status_url)


def report(demo: Demo) -> str:
    before, after = demo.before, demo.after
    assert after.metrics is not None

    def ms(phase: Phase, kind: str, figure: str) -> float:
        return getattr(phase, kind)(figure) * 1000

    rows = [
        Row("chats", len(before.chats), len(after.chats)),
        Row("failed", before.failed, after.failed),
        Row("latency, mean", ms(before, "mean", "latency"), ms(after, "mean", "latency"), "ms"),
        Row("latency, max", ms(before, "max", "latency"), ms(after, "max", "latency"), "ms"),
        Row("first token, mean", ms(before, "mean", "first_token"),
            ms(after, "mean", "first_token"), "ms"),
        Row("first token, max", ms(before, "max", "first_token"),
            ms(after, "max", "first_token"), "ms"),
        Row("provider calls", before.provider_calls, after.provider_calls),
    ]  # fmt: skip
    breakers = after.metrics.samples("toolkit_circuit_breaker_calls_total")
    fell_back = {
        labels["toolkit_circuit_breaker_name"]: value
        for labels, value in breakers
        if labels["toolkit_circuit_breaker_outcome"] != "success"
    }
    tasks = deferred_tasks(after.metrics)
    streams = conversation_streams(after.metrics)
    first_chunk = after.metrics.total(
        "toolkit_resilience_stream_time_to_first_chunk_seconds_sum"
    ) / max(1.0, after.metrics.total("toolkit_resilience_stream_time_to_first_chunk_seconds_count"))
    lines = [
        f"examples/multi_agent_chat/app.py, {demo.duration:g} s of traffic per phase:",
        f"  {USERS} users, each sending a chat every {INTERVAL * 1000:.0f} ms; the provider "
        f"fails {FAILURE_RATE:.0%} of its calls",
        f"  and hangs for {STALL:g} s on {STALL_RATE:.0%} of them (the backup provider never)",
        "before:  privacy check, retrieval, memory write and the whole answer one after another,",
        "         then JSON; a provider error is a 503",
        "after:   privacy ∥ retrieval (toolkit.gather), the answer streamed (SSE), the memory",
        "         write deferred (@toolkit.background), retries, timeouts and a fallback per agent",
        "         (@toolkit.resilient, the stream's until its first chunk), per-agent spans",
        "",
        "answered chats only, for latency and first token:",
        *comparison(rows),
        "",
        "after: the fan-out's branches by outcome: "
        + "; ".join(
            f"{branch} "
            + ", ".join(f"{outcome} {n:.0f}" for outcome, n in sorted(outcomes.items()))
            for branch, outcomes in sorted(fanout_branches(after.metrics).items())
        ),
        "after: the conversation's streams by outcome: "
        + ", ".join(f"{outcome} {n:.0f}" for outcome, n in sorted(streams.items())),
        f"after: the conversation's first chunk came {first_chunk * 1000:.0f} ms after its "
        "start, on average (the server's count)",
        "after: agent calls that still failed, answered by their fallback: "
        + (", ".join(f"{name} {value:.0f}" for name, value in sorted(fell_back.items())) or "none"),
        "after: memory writes after the answer: "
        + ", ".join(f"{outcome} {value:.0f}" for outcome, value in sorted(tasks.items()))
        + f", of {len(after.answered)} handed off; "
        f"retried {after.metrics.total('toolkit_deferred_retries_total'):.0f}",
        "",
        *agent_table(after.stats),
        "",
        f"The after server's status page was {demo.status_url} (read-only token); it",
        "stopped with the demo: make demo multi-agent-chat ARGS=--serve keeps one up.",
    ]
    return "\n".join(lines)


def agent_table(stats: dict[str, Any]) -> list[str]:
    """Per agent and per model: the after server's /stats."""
    lines = [
        "Agents and models, from the after server's /_toolkit/stats (read-only token):",
        f"{'':<7}{'name':<16}{'calls':>6}{'errors':>7}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}",
    ]
    for kind, key in (("agent", "agents"), ("model", "models")):
        for row in stats.get(key, []):
            lines.append(
                f"{kind:<7}{row[kind]:<16}{row['count']:>6}{row['errors']:>7}"
                f"{row['p50'] * 1000:>8.1f}{row['p95'] * 1000:>8.1f}{row['max'] * 1000:>8.1f}"
            )
    return lines


def serve(port: int) -> Server:
    server = Server(APP, mode="after", port=port)
    print(
        f"  chat: curl -N {server.url}/chat -H 'content-type: application/json' "
        """-d '{"message": "I adopted a cat called Miso", "session_id": "s1"}'"""
    )
    return server


def main(argv: Sequence[str] | None = None) -> int:
    return demo_main(
        argv, prog="python -m examples multi-agent-chat", description=__doc__, run=run,
        report=report, serve=serve,
    )  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main())
