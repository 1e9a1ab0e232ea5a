"""``make demo memory-search``: both phases on real uvicorn processes; the table's claims hold."""

from __future__ import annotations

import math
import signal
import subprocess
import sys

import httpx
import pytest

from examples._harness import ROOT
from examples.memory_search.demo import (
    STORES,
    Demo,
    hit_ratio,
    report,
    rows,
    run_demo,
)

pytestmark = pytest.mark.slow

DURATION = 2.5


@pytest.fixture(scope="module")
def demo() -> Demo:
    return run_demo(DURATION)


def test_searches_are_faster_and_more_with_the_toolkit(demo: Demo) -> None:
    """Cached searches and stores in parallel: a lower p95 and a higher throughput."""
    before, after = demo.before.searches, demo.after.searches
    assert before.ok > 0
    assert after.p95 < before.p95
    assert after.throughput(DURATION) > before.throughput(DURATION)


def test_no_search_fails_with_the_toolkit(demo: Demo) -> None:
    """A store that is late or drops the connection costs its deadline, and the search
    answers without it (listed in "missing") instead of failing."""
    assert demo.after.searches.errors == 0
    assert demo.before.partial == 0  # without the toolkit, a search is whole or fails


def test_each_text_is_embedded_once_with_the_toolkit(demo: Demo) -> None:
    """The embedding API is called for texts never seen: far fewer calls, per search too."""
    before, after = demo.before, demo.after
    assert after.calls["embedding"] < before.calls["embedding"]
    per_search = [p.calls["embedding"] / p.searches.ok for p in (before, after)]
    assert per_search[1] < per_search[0]
    assert before.calls["embedding.texts"] >= before.searches.ok  # one query embedded each


def test_the_search_cache_answers_most_searches_and_its_counts_match_the_clients(
    demo: Demo,
) -> None:
    retrieval = demo.cache("retrieval")
    assert retrieval.get("hit", 0) > retrieval.get("miss", 0) > 0
    # Every search the clients sent was looked up once (the demo's last searches included).
    assert sum(retrieval.values()) >= demo.after.searches.requests
    embeddings = demo.cache("embeddings")
    assert hit_ratio(embeddings) > 0.5


def test_each_store_is_a_branch_of_the_fan_out_and_the_slow_one_falls_back(demo: Demo) -> None:
    """Every search computed (a cache miss) asked the three stores side by side; the graph
    store's slow calls ran out of their deadline and the search went on without them."""
    misses = demo.cache("retrieval").get("miss", 0)
    for store in STORES:
        assert 0 < sum(demo.branches(store).values()) <= misses
    assert demo.branches("graph").get("fallback", 0) > 0
    assert demo.after.partial > 0


def test_a_partial_search_is_not_kept_in_the_cache(demo: Demo) -> None:
    """A search a store missed is computed again next time, not served from the cache: every
    partial answer the clients got was a computation with a branch that fell back."""
    fell_back = sum(
        count
        for store in STORES
        for outcome, count in demo.branches(store).items()
        if outcome != "ok"
    )
    assert demo.after.partial <= fell_back


def test_adding_a_memory_answers_sooner_and_is_searchable_soon_after(demo: Demo) -> None:
    """Extraction deferred: the add answers before it; once it has run, the profile's cached
    searches are invalidated and the new fact is found. The medians are compared: a phase
    has a dozen or so adds, so its p95 is its slowest, which one stall on a busy machine sets."""
    assert demo.after.adds.p50 < demo.before.adds.p50
    assert demo.before.adds.ok > 0
    assert demo.after.adds.errors == 0  # the model's failures are retried in the background
    for phase in (demo.before, demo.after):
        assert math.isfinite(phase.fresh_after)


def test_no_deferred_extraction_is_lost(demo: Demo) -> None:
    """Every memory accepted was extracted (a failed extraction is retried: more calls)."""
    assert demo.after.calls["extraction"] >= demo.after.adds.ok + 1  # + the demo's last one


def test_the_report_prints_the_rows_and_the_hit_ratios(demo: Demo) -> None:
    text = report(demo)
    for row in rows(demo):
        assert any(line.startswith(row.label) for line in text.splitlines()), row.label
    retrieval = demo.cache("retrieval")
    assert f"hit ratio {hit_ratio(retrieval):.0%}" in text
    assert demo.after.metrics is not None
    for line in demo.after.metrics.lines("toolkit_cache_requests_total"):
        assert line in text.splitlines()


def test_serve_runs_the_app_with_the_toolkit_until_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "examples", "memory-search", "--serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert " with the toolkit on http://127.0.0.1:" in first
        url = first.split(" on ")[1].split()[0]
        found = httpx.post(f"{url}/profiles/user-1/search", json={"query": "do I live in Lyon?"})
        assert found.status_code == 200
        assert "Lives in Lyon since March" in found.json()["memories"]
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(15)
        if process.stdout is not None:
            process.stdout.close()
