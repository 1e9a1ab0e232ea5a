"""examples/_harness: the table, the load's figures, the scrape, the scripted providers, and
``make demo NAME`` / ``python -m examples NAME``."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time

import httpx
import pytest

from examples import __main__ as examples_main
from examples._harness import (
    Metrics,
    ProviderError,
    Row,
    ScriptedEmbedder,
    ScriptedModel,
    Traffic,
    comparison,
    probe,
    similarity,
    status_settings,
)
from examples._harness.modes import STATUS_TOKEN_VARIABLE
from examples._harness.server import ROOT
from tests.support.servers import require_binary
from toolkit import ToolkitSettings


def test_the_table_aligns_the_phases_and_states_the_change() -> None:
    lines = comparison(
        [Row("search p95", 600.4, 60.0, "ms"), Row("errors", 0, 0), Row("partial", 0, 3)]
    )
    header, p95, errors, partial = lines
    assert header.split() == ["before", "after", "change"]
    assert p95.split() == ["search", "p95", "ms", "600", "60", "x0.10"]
    assert errors.split()[-3:] == ["0", "0", "="]
    assert partial.split()[-1] == "new"
    assert len({len(line) for line in lines}) == 1  # every column lines up


def test_the_table_shows_a_missing_figure_as_a_dash() -> None:
    (_, row) = comparison([Row("found after", 150.0, math.nan, "ms", 1)])
    assert row.split()[-2:] == ["150.0", "-"]


def test_traffic_counts_answers_errors_percentiles_and_throughput() -> None:
    traffic = Traffic()
    for number in range(1, 21):
        traffic.record(200 if number <= 15 else 503, number / 100)
    traffic.record(0, 1.0)  # no response at all
    assert (traffic.requests, traffic.ok, traffic.errors) == (21, 15, 6)
    assert traffic.error_rate == pytest.approx(6 / 21)
    assert traffic.p50 == pytest.approx(0.11)  # nearest rank: the 11th of 21
    assert traffic.p95 == pytest.approx(0.20)
    assert traffic.max == 1.0
    assert traffic.throughput(3.0) == 5.0
    assert math.isnan(Traffic().p95)


METRICS = """\
# TYPE toolkit_cache_requests_total counter
toolkit_cache_requests_total{toolkit_cache_name="retrieval",toolkit_cache_result="hit"} 7.0
toolkit_cache_requests_total{toolkit_cache_name="retrieval",toolkit_cache_result="miss"} 3.0
toolkit_cache_requests_total{toolkit_cache_name="embeddings",toolkit_cache_result="hit"} 5.0
"""


def test_the_scrape_sums_samples_by_label() -> None:
    metrics = Metrics("http://x/metrics", METRICS)
    assert metrics.total("toolkit_cache_requests_total") == 15
    assert metrics.total("toolkit_cache_requests_total", toolkit_cache_result="hit") == 12
    by_result = metrics.by(
        "toolkit_cache_requests_total", "toolkit_cache_result", toolkit_cache_name="retrieval"
    )
    assert by_result == {"hit": 7, "miss": 3}
    assert len(metrics.lines("toolkit_cache_requests_total")) == 3  # the samples, no comments


def test_status_settings_give_a_read_only_token_only_when_one_was_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(STATUS_TOKEN_VARIABLE, raising=False)
    assert status_settings() == {}
    monkeypatch.setenv(STATUS_TOKEN_VARIABLE, "a" * 24)
    settings = ToolkitSettings(**status_settings())
    assert "demo" in settings.admin.read_tokens


@pytest.mark.anyio
async def test_the_scripted_model_fails_at_its_rate_and_counts_every_call() -> None:
    model = ScriptedModel("m", latency=(0, 0), error_rate=0.5, seed=3)
    failures = 0
    for _ in range(200):
        try:
            completion = await model.complete("instructions\nhello there")
        except ProviderError:
            failures += 1
        else:
            assert completion.text == "hello there"
            assert completion.input_tokens == 3
    assert model.calls == 200
    assert model.errors == failures
    assert 60 < failures < 140


@pytest.mark.anyio
async def test_the_scripted_embedder_gives_the_same_vector_for_the_same_text() -> None:
    embedder = ScriptedEmbedder("e", latency=(0, 0))
    first, again, other = await embedder.embed_many(
        ["lives in Lyon", "lives in Lyon", "plays the cello"]
    )
    assert first == again
    assert similarity(first, again) == pytest.approx(1.0)
    assert similarity(first, other) < 0.5
    assert await embedder.embed("lives in Lyon") == first
    assert (embedder.calls, embedder.texts) == (2, 4)


def test_every_example_with_a_demo_is_listed_by_its_dashed_name() -> None:
    assert {"quickstart", "memory-search", "blocking-backend"} <= set(examples_main.names())


def test_an_unknown_example_exits_2_and_lists_the_examples() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples", "no-such-example"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no example 'no-such-example'; the examples are: " in done.stderr
    assert "memory-search" in done.stderr


@pytest.mark.parametrize(
    ("goals", "runs"),
    [
        (["demo"], "-m examples quickstart"),
        (["demo", "NAME=memory-search"], "-m examples memory-search"),
        (["demo", "blocking-backend"], "-m examples blocking-backend"),
        (["demo", "memory-search", "ARGS=--duration 2"], "-m examples memory-search --duration 2"),
    ],
)
def test_make_demo_runs_the_named_example(goals: list[str], runs: str) -> None:
    """``make -n``: what would run, without running it (nor building the venv)."""
    done = subprocess.run(
        [require_binary("make"), "-n", "--no-print-directory", *goals],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if "-m examples" in line]
    assert len(commands) == 1
    assert commands[0].rstrip().endswith(runs)


@pytest.mark.anyio
async def test_a_probe_stuck_behind_a_stall_counts_every_probe_due_meanwhile() -> None:
    """One answer 150 ms late delays the probes due in those 150 ms too: each is recorded,
    late by how long it waited, so a stall weighs what it cost (no coordinated omission)."""
    stalled = False

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal stalled
        if not stalled:
            stalled = True
            await asyncio.sleep(0.15)
        return httpx.Response(200)

    out = Traffic()
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(answer), base_url="http://t"
    ) as http:
        await probe(0.01, "/health", out)(http, time.monotonic() + 0.3)
    assert 25 <= out.requests <= 31  # one per 10 ms of the 300 ms, sent or not
    assert out.ok == out.requests
    assert out.max >= 0.15
    late = [lag for lag in out.latencies if lag >= 0.05]
    assert len(late) >= 9  # the probes due in the stall's first 100 ms, at least
