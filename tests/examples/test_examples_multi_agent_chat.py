"""``make demo multi-agent-chat``: both phases on real uvicorn processes with a flaky provider,
and ``--serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from examples._harness import ROOT
from examples.multi_agent_chat.demo import (
    AGENTS,
    Demo,
    conversation_streams,
    fanout_branches,
    report,
    run,
)

pytestmark = pytest.mark.slow

DURATION = 3.0


@pytest.fixture(scope="module")
def demo() -> Demo:
    return run(DURATION)


def _row(demo: Demo, label: str) -> list[str]:
    (line,) = [line for line in report(demo).splitlines() if line.startswith(f"{label}  ")]
    return line.split()


def test_the_flaky_provider_fails_chats_without_the_toolkit_and_none_with_it(demo: Demo) -> None:
    """Without it a provider error anywhere in the pipeline fails the chat; with it, retries
    and each agent's fallback answer every chat."""
    assert demo.before.chats
    assert demo.after.chats
    assert demo.before.failed > 0
    assert demo.after.failed == 0
    assert _row(demo, "failed")[1:3] == [str(demo.before.failed), "0"]


def test_latency_is_lower_on_average_and_at_worst_with_the_toolkit(demo: Demo) -> None:
    """The first two agents side by side and the memory write after the answer shorten every
    chat; a hanging call is cut by its agent's timeout instead of holding the chat."""
    assert demo.after.mean("latency") < demo.before.mean("latency")
    assert demo.after.max("latency") < demo.before.max("latency")


def test_the_first_token_comes_sooner_with_the_stream(demo: Demo) -> None:
    """Before, the answer comes whole: its first token with its last. After, it streams."""
    for chat in demo.before.answered:
        assert chat.first_token == chat.latency
    for chat in demo.after.answered:
        assert chat.first_token < chat.latency
    assert demo.after.mean("first_token") < demo.before.mean("first_token")
    assert demo.after.max("first_token") < demo.before.max("first_token")


def test_every_answered_chat_writes_its_memory_after_the_answer(demo: Demo) -> None:
    """One deferred memory write per answered chat, each done (retried when the provider
    failed it); the memory manager's runs are those writes and their retries."""
    assert demo.after.metrics is not None
    tasks = demo.after.metrics.by("toolkit_deferred_tasks_total", "toolkit_task_outcome")
    assert tasks == {"done": len(demo.after.answered)}
    retries = demo.after.metrics.total("toolkit_deferred_retries_total")
    runs = {row["agent"]: row["count"] for row in demo.after.stats["agents"]}
    assert runs["memory-manager"] == len(demo.after.answered) + retries
    assert f"done {len(demo.after.answered)}, of {len(demo.after.answered)} handed off" in report(
        demo
    )


def test_each_agent_has_its_own_spans_on_the_status_page(demo: Demo) -> None:
    """The privacy and retrieval agents run once per chat, the conversation agent once per
    answered chat; the page itself answers the read-only token."""
    runs = {row["agent"]: row["count"] for row in demo.after.stats["agents"]}
    assert set(runs) == set(AGENTS)
    assert runs["privacy"] == runs["retrieval"] == len(demo.after.chats)
    assert runs["conversation"] == len(demo.after.answered)
    models = {row["model"] for row in demo.after.stats["models"]}
    assert {"guard-model", "chat-model", "memory-model"} <= models
    assert demo.after.status_page == 200
    for agent in AGENTS:
        assert any(line.startswith(f"agent  {agent} ") for line in report(demo).splitlines())


def test_the_fallbacks_answered_what_the_retries_did_not(demo: Demo) -> None:
    """Calls that still failed after their retries (the hanging ones, cut by their timeout)
    are counted by each agent's breaker; the provider's backup model answered the
    conversation's."""
    assert demo.after.metrics is not None
    outcomes = demo.after.metrics.by(
        "toolkit_circuit_breaker_calls_total", "toolkit_circuit_breaker_outcome"
    )
    assert outcomes["success"] > 0
    breakers = demo.after.metrics.by(
        "toolkit_circuit_breaker_calls_total", "toolkit_circuit_breaker_name"
    )
    assert set(breakers) == {"privacy", "retrieval", "conversation"}
    conversation_fallbacks = sum(
        value
        for labels, value in demo.after.metrics.samples("toolkit_circuit_breaker_calls_total")
        if labels["toolkit_circuit_breaker_name"] == "conversation"
        and labels["toolkit_circuit_breaker_outcome"] != "success"
    )
    assert demo.after.calls["backup-model"] == conversation_fallbacks
    assert demo.before.calls["backup-model"] == 0


def test_the_privacy_and_retrieval_agents_ran_side_by_side_as_branches(demo: Demo) -> None:
    """One branch of each per chat in the after server's fan-out metric, every one answered
    (its agent's own fallback keeps the branch's outcome ok)."""
    assert demo.after.metrics is not None
    branches = fanout_branches(demo.after.metrics)
    chats = len(demo.after.chats)
    assert branches == {"privacy": {"ok": chats}, "retrieval": {"ok": chats}}
    assert f"privacy ok {chats}; retrieval ok {chats}" in report(demo)


def test_each_conversation_stream_completed_or_fell_back_before_its_first_chunk(
    demo: Demo,
) -> None:
    """The streams the server counted are the answered chats; those that fell back are the
    backup model's calls, and none was interrupted after its first chunk."""
    assert demo.after.metrics is not None
    streams = conversation_streams(demo.after.metrics)
    assert sum(streams.values()) == len(demo.after.answered)
    assert set(streams) <= {"complete", "fallback"}
    assert streams.get("fallback", 0) == demo.after.calls["backup-model"]


def test_serve_streams_an_answer_over_sse() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples", "multi-agent-chat", "--serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "MULTI_AGENT_CHAT_FAILURE_RATE": "0",
            "MULTI_AGENT_CHAT_STALL_RATE": "0",
        },
    )
    try:
        assert demo.stdout is not None
        assert demo.stdout.readline().startswith("  chat: curl -N http://127.0.0.1:")
        started = demo.stdout.readline()
        assert started.startswith("examples.multi_agent_chat.app:app with the toolkit on")
        url = started.split(" on ")[1].split()[0]
        body = {"message": "I adopted a cat called Miso", "session_id": "s1"}
        with httpx.stream("POST", f"{url}/chat", json=body, timeout=10) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line for line in response.iter_lines() if line.startswith("event: ")]
        assert events[0] == "event: token"
        assert events[-1] == "event: done"
        assert set(events[:-1]) == {"event: token"}
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(15)
        if demo.stdout is not None:
            demo.stdout.close()
