"""The memory-search service under a short load, without the toolkit and then with it.

    python -m examples memory-search [--duration 4]   # both phases, then the table
    python -m examples memory-search --serve          # the toolkit's app, until Ctrl-C

Each phase runs ``examples/memory_search/app.py`` in its own uvicorn process and drives it
with one client per profile (12), each sending its next request as soon as the last was
answered, a search (a question that user asks now and then); and a steady stream of new
memories, ADD_RATE a second over every profile. Then it adds one more memory and times how
long until a search finds it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from examples._harness import (
    CALLS_PATH,
    Metrics,
    Row,
    Server,
    Traffic,
    closed_loop,
    comparison,
    demo_main,
    drive,
    every,
    send,
)
from examples.memory_search.app import PROFILES, SEARCH_DEADLINE, STORE_DEADLINE

APP = "examples.memory_search.app:app"
ADD_RATE = 6.0  # memories added a second, over every profile (users write at human speed)
QUESTIONS = (
    "where do I live?",
    "what am I allergic to?",
    "what is my job at the hospital?",
    "where does my sister live?",
    "which restaurants do I like?",
    "which race do I run in autumn?",
    "what car do I drive?",
    "what language am I learning?",
)
NEW_MEMORIES = (
    "We adopted a cat called Miso. She sleeps on the piano.",
    "My new office is in Villeurbanne, near the tram line.",
    "I stopped eating dairy last month.",
    "My brother Tom moved to Montreal for work.",
    "I booked flights to Kyoto for April.",
)
FRESH_FACT = "Took up rock climbing at the Croix-Rousse gym"  # the last memory, then searched
FRESH_QUERY = "do I go climbing at a gym?"
FRESH_TIMEOUT = 10.0  # seconds
SHOWN_METRICS = (
    "toolkit_cache_requests_total",
    "toolkit_fanout_branch_duration_seconds_count",
    "toolkit_deferred_tasks_total",
    "toolkit_deferred_retries_total",
)
STORES = ("vector", "graph", "document")
Mode = Literal["before", "after"]
PHASES: tuple[Mode, ...] = ("before", "after")


@dataclass
class Phase:
    """What one phase's clients saw, and what it cost the scripted providers."""

    searches: Traffic = field(default_factory=Traffic)
    adds: Traffic = field(default_factory=Traffic)
    partial: int = 0  # searches answered without one of the stores
    calls: dict[str, int] = field(default_factory=dict)  # GET /_demo/calls at the end
    fresh_after: float = math.nan  # seconds from an add's answer until a search found it
    metrics: Metrics | None = None  # the after server's /metrics


@dataclass
class Demo:
    duration: float
    before: Phase
    after: Phase

    def branches(self, store: str) -> dict[str, float]:
        """How the after server's fan-out branch for ``store`` ended: outcome -> count."""
        assert self.after.metrics is not None
        return self.after.metrics.by(
            "toolkit_fanout_branch_duration_seconds_count",
            "toolkit_fanout_outcome",
            toolkit_fanout_branch=store,
        )

    def cache(self, name: str) -> dict[str, float]:
        """The after server's ``name`` cache decisions (``retrieval``, ``embeddings``)."""
        assert self.after.metrics is not None
        return self.after.metrics.by(
            "toolkit_cache_requests_total", "toolkit_cache_result", toolkit_cache_name=name
        )


def hit_ratio(decisions: dict[str, float]) -> float:
    lookups = sum(decisions.values())
    return decisions.get("hit", 0.0) / lookups if lookups else math.nan


def run_phase(mode: Mode, duration: float, *, seed: int = 1) -> Phase:
    phase, rng = Phase(), random.Random(seed)
    added = itertools.count()

    async def search(http: httpx.AsyncClient, number: int) -> None:
        profile_id = PROFILES[number % len(PROFILES)]
        query = {"query": rng.choice(QUESTIONS)}
        path = f"/profiles/{profile_id}/search"
        answer = await send(http, "POST", path, phase.searches, json=query)
        if answer is not None and answer.status_code == 200 and answer.json()["missing"]:
            phase.partial += 1

    async def add(http: httpx.AsyncClient) -> None:
        number = next(added)
        memory = {"text": NEW_MEMORIES[number % len(NEW_MEMORIES)]}
        path = f"/profiles/{PROFILES[number % len(PROFILES)]}/memories"
        await send(http, "POST", path, phase.adds, json=memory)

    with Server(APP, mode=mode) as server:
        clients = [*closed_loop(len(PROFILES), search), every(1 / ADD_RATE, add)]
        drive(server.url, duration, clients)
        phase.fresh_after = asyncio.run(_time_until_found(server.url))
        phase.calls = _settled_calls(server)
        if mode == "after":
            phase.metrics = server.metrics()
    return phase


async def _time_until_found(base_url: str) -> float:
    """Add FRESH_FACT to a profile, then search for it until it is found: seconds from the
    add's answer (NaN if not within FRESH_TIMEOUT)."""
    timeout = FRESH_TIMEOUT
    profile_id = PROFILES[0]
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as http:
        for _ in range(5):  # the extraction model fails now and then: ask again
            added = await http.post(
                f"/profiles/{profile_id}/memories", json={"text": FRESH_FACT + "."}
            )
            if added.status_code == 200:
                break
        answered = time.monotonic()
        while time.monotonic() - answered < timeout:
            found = await http.post(f"/profiles/{profile_id}/search", json={"query": FRESH_QUERY})
            if found.status_code == 200 and FRESH_FACT in found.json()["memories"]:
                return time.monotonic() - answered
            await asyncio.sleep(0.01)
    return math.nan


def _settled_calls(server: Server, timeout: float = 10.0) -> dict[str, int]:
    """The providers' call counts once deferred work is done (no change for 300 ms)."""
    calls: Any = server.get_json(CALLS_PATH)
    settled = time.monotonic()
    started = settled
    while time.monotonic() - settled < 0.3 and time.monotonic() - started < timeout:
        time.sleep(0.05)
        now = server.get_json(CALLS_PATH)
        if now != calls:
            calls, settled = now, time.monotonic()
    return dict(calls)


def run_demo(duration: float) -> Demo:
    return Demo(duration, *(run_phase(phase, duration) for phase in PHASES))


def rows(demo: Demo) -> list[Row]:
    before, after = demo.before, demo.after
    seconds = demo.duration

    def both(figure: Any) -> tuple[float, float]:
        return float(figure(before)), float(figure(after))

    return [
        Row("searches answered", *both(lambda p: p.searches.ok)),
        Row("search throughput", *both(lambda p: p.searches.throughput(seconds)), "/s", 1),
        Row("search p50", *both(lambda p: p.searches.p50 * 1000), "ms"),
        Row("search p95", *both(lambda p: p.searches.p95 * 1000), "ms"),
        Row("search max", *both(lambda p: p.searches.max * 1000), "ms"),
        Row("search errors", *both(lambda p: p.searches.errors)),
        Row("searches partial", *both(lambda p: p.partial)),
        Row("add p95", *both(lambda p: p.adds.p95 * 1000), "ms"),
        Row("add errors", *both(lambda p: p.adds.errors)),
        Row("memories added", *both(lambda p: p.adds.ok)),
        Row("embedding calls", *both(lambda p: p.calls.get("embedding", 0))),
        Row(
            "  per search",
            *both(lambda p: p.calls.get("embedding", 0) / max(1, p.searches.ok)),
            "",
            3,
        ),
        Row("texts embedded", *both(lambda p: p.calls.get("embedding.texts", 0))),
        Row("extraction calls", *both(lambda p: p.calls.get("extraction", 0))),
        Row("new memory found", *both(lambda p: p.fresh_after * 1000), "ms"),
    ]


def report(demo: Demo) -> str:
    retrieval, embeddings = demo.cache("retrieval"), demo.cache("embeddings")
    assert demo.after.metrics is not None
    lines = [
        f"examples/memory_search/app.py, {demo.duration:g} s of load per phase: {len(PROFILES)} "
        "profiles,",
        f"  one client each searching back to back, and {ADD_RATE:g} new memories a second",
        "before:  the app alone: the query embedded every time, the vector, graph and document",
        "         stores one after another (the graph store takes 500 ms one call in 12; the",
        "         document store drops one in 25), extraction before the add answers",
        "after:   toolkit.install(); @toolkit.cache_embeddings per text; the stores in parallel",
        f"         (toolkit.gather, {STORE_DEADLINE} a store, {SEARCH_DEADLINE} in all, [] "
        "when one is late or down);",
        "         the search cached per profile and query (@toolkit.cached, tags=profile:<id>),",
        "         invalidated once a new memory is filed; extraction deferred",
        "         (@toolkit.background), retried when the model fails",
        "",
        *comparison(rows(demo)),
        "",
        f"after: the search cache answered {retrieval.get('hit', 0):.0f} of "
        f"{sum(retrieval.values()):.0f} searches (hit ratio {hit_ratio(retrieval):.0%}); the "
        f"embedding cache {embeddings.get('hit', 0):.0f} of {sum(embeddings.values()):.0f} texts "
        f"({hit_ratio(embeddings):.0%})",
        "after: how each store's branch ended: "
        + "; ".join(
            f"{store} " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(demo.branches(store).items()))
            for store in STORES
        ),
        "'new memory found': from the add's answer until a search returns the new fact (after:",
        "the deferred extraction files it, then invalidates the profile's cached searches)",
        "",
        f"The after server's own count, from {demo.after.metrics.url}:",
        *demo.after.metrics.lines(*SHOWN_METRICS),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return demo_main(
        argv,
        prog="python -m examples memory-search",
        description=__doc__,
        run=run_demo,
        report=report,
        serve=lambda port: Server(APP, mode="after", port=port),
    )
