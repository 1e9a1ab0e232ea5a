"""The quickstart agent under a short burst of traffic, without the toolkit and then with it.

    python -m examples.quickstart.demo [--duration 4]   # both phases, then a table
    python -m examples.quickstart.demo --serve          # the toolkit-enabled app, until Ctrl-C

Each phase runs ``examples/quickstart/app.py`` in its own uvicorn process on a free loopback
port and drives it with 8 well-behaved users (one chat every ~300 ms each, own API keys) and
one abusive client (one API key, 16 requests always in flight). In the middle of each phase the
app's vector store stops answering for a while (``OUTAGE``). The toolkit's server gets a
read-only admin token of its own: the demo reads its ``/_toolkit/stats`` with it, and ``--serve``
prints it for the status page.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import random
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from examples import _harness as harness
from examples.quickstart.app import MODEL_PRICE, VECTOR_STORE_ERROR_RATE

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.quickstart.app:app"
USERS = 8
USER_INTERVAL = (0.25, 0.35)  # seconds between one user's messages
ABUSIVE_CONCURRENCY = 16
OUTAGE = (0.4, 0.7)  # the vector store is down over this share of each phase
# Series of the "after" server shown under the table: where its numbers come from.
SHOWN_METRICS = (
    "toolkit_rate_limit_requests_total",
    "toolkit_cache_requests_total",
    "toolkit_circuit_breaker_calls_total",
    "toolkit_circuit_breaker_transitions_total",
    "toolkit_pool_create_time_seconds_count",
    "toolkit_gen_ai_cost_total",
    "toolkit_cache_saved_calls_total",
    "toolkit_cache_saved_tokens_total",
    "http_server_request_duration_seconds_count",
)
ADMIN = harness.ADMIN
STATUS_USER = harness.STATUS_USER  # the name app.py gives the read-only token: the sign-in name
QUESTIONS = (
    "how long do refunds take?",
    "where is my tracking link?",
    "I forgot my password",
    "can I export invoices?",
    "what is the meaning of life?",
)
ABUSIVE_MESSAGE = "repeat everything you know"


class Server(harness.Server):
    """The quickstart app in a uvicorn process of its own (the harness's ``Server``), with or
    without the toolkit, its vector store down over ``outage`` (seconds after the first chat)."""

    def __init__(
        self, *, with_toolkit: bool, port: int = 0, outage: tuple[float, float] | None = None
    ) -> None:
        env = {
            "QUICKSTART_TOOLKIT": "1" if with_toolkit else "0",
            "QUICKSTART_OUTAGE": "{:g}-{:g}".format(*outage) if outage else "",
        }
        super().__init__(APP, env=env, port=port, token_variable="QUICKSTART_STATUS_TOKEN")
        self.with_toolkit = with_toolkit
        self.outage = outage


@dataclass
class Traffic:
    """What one kind of client saw: a status (0: no response) and a latency per request."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    policy: str | None = None  # the RateLimit-Policy field the server announced, if any

    @property
    def requests(self) -> int:
        return len(self.statuses)

    @property
    def allowed(self) -> int:
        return sum(200 <= status < 300 for status in self.statuses)

    @property
    def limited(self) -> int:
        return self.statuses.count(429)

    @property
    def errors(self) -> int:
        return self.requests - self.allowed - self.limited

    @property
    def unavailable(self) -> int:
        """Chats the app could not answer (503: document search unavailable)."""
        return self.statuses.count(503)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds (NaN when there are none)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Load:
    users: Traffic
    abusive: Traffic


async def _chat(client: httpx.AsyncClient, key: str, session: str, text: str, out: Traffic) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(
            "/chat", json={"message": text, "session_id": session}, headers={"X-API-Key": key}
        )
        status = response.status_code
        out.policy = out.policy or response.headers.get("ratelimit-policy")
    except httpx.HTTPError:
        status = 0
    out.latencies.append(time.perf_counter() - started)
    out.statuses.append(status)


async def _user(
    client: httpx.AsyncClient, number: int, deadline: float, rng: random.Random, out: Traffic
) -> None:
    key, session = f"user-{number}", f"session-{number}"
    next_send = time.time() + rng.uniform(0, USER_INTERVAL[1])  # users do not start in step
    while next_send < deadline:
        await asyncio.sleep(max(0.0, next_send - time.time()))
        next_send += rng.uniform(*USER_INTERVAL)
        await _chat(client, key, session, rng.choice(QUESTIONS), out)


async def _users(base_url: str, deadline: float, seed: int) -> Traffic:
    rng, out = random.Random(seed), Traffic()
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        asyncio.TaskGroup() as group,
    ):
        for number in range(1, USERS + 1):
            group.create_task(_user(client, number, deadline, rng, out))
    return out


async def _abusive_worker(client: httpx.AsyncClient, deadline: float, out: Traffic) -> None:
    while time.time() < deadline:
        await _chat(client, "scraper-1", "loop", ABUSIVE_MESSAGE, out)


def _abuse(base_url: str, deadline: float) -> Traffic:
    """The abusive client, run in a process of its own (see :func:`drive`)."""

    async def abuse() -> Traffic:
        out = Traffic()
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=10) as client,
            asyncio.TaskGroup() as group,
        ):
            for _ in range(ABUSIVE_CONCURRENCY):
                group.create_task(_abusive_worker(client, deadline, out))
        return out

    return asyncio.run(abuse())


def drive(base_url: str, duration: float, abuser: Executor, *, seed: int = 1) -> Load:
    """The demo's traffic against ``base_url`` for ``duration`` seconds.

    The abusive client runs in ``abuser``, another process: in this one, its stream of instant
    429s would keep the event loop busy and add its delays to the users' measured latencies.
    Requests in flight at the deadline are waited for, not cancelled, so the server counted
    exactly the requests returned here.
    """
    deadline = time.time() + duration  # wall clock: the same in both processes
    abusive = abuser.submit(_abuse, base_url, deadline)
    users = asyncio.run(_users(base_url, deadline, seed))
    return Load(users, abusive.result())


@dataclass
class Demo:
    duration: float
    before: Load
    after: Load
    metrics_url: str
    metrics: str  # the "after" server's /metrics, scraped once its traffic ended
    stats: dict[str, Any]  # its /_toolkit/stats, read then with the read-only token
    status_url: str
    status_token: str
    status_page: int  # the status code its status page answered with that token

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Labels and value of every sample called ``name`` in the scraped metrics."""
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(self.metrics)
            for sample in family.samples
            if sample.name == name
        ]

    def total(self, name: str, label: str = "", value: str = "") -> float:
        """The sum of the samples called ``name`` (with ``label`` = ``value`` when given)."""
        return sum(v for labels, v in self.samples(name) if not label or labels[label] == value)

    def model_cache(self) -> dict[str, float]:
        """The after server's model-answer cache decisions: result -> count."""
        return {
            labels["toolkit_cache_result"]: value
            for labels, value in self.samples("toolkit_cache_requests_total")
            if labels.get("toolkit_cache_name") == "model"
        }

    def saved(self) -> dict[str, float]:
        """What the after server's cache hits spared: ``calls``, ``input`` and ``output``
        tokens (the ``toolkit.cache.saved.*`` counters, every cache and model)."""
        tokens = self.samples("toolkit_cache_saved_tokens_total")
        return {
            "calls": self.total("toolkit_cache_saved_calls_total"),
            **{
                kind: sum(v for labels, v in tokens if labels["gen_ai_token_type"] == kind)
                for kind in ("input", "output")
            },
        }

    def vector_store_calls(self) -> dict[str, float]:
        """The after server's vector-store breaker decisions: outcome -> count."""
        return {
            labels["toolkit_circuit_breaker_outcome"]: value
            for labels, value in self.samples("toolkit_circuit_breaker_calls_total")
        }


def outage_window(duration: float) -> tuple[float, float]:
    """When the vector store is down, in seconds after a phase's first chat."""
    return OUTAGE[0] * duration, OUTAGE[1] * duration


def run_demo(duration: float) -> Demo:
    """Both phases, each on a fresh server."""
    outage = outage_window(duration)
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that ran event loops
    with ProcessPoolExecutor(1, mp_context=spawn) as abuser:
        # Start it and import this module there now, not on the first phase's clock.
        abuser.submit(Traffic).result()
        with Server(with_toolkit=False, outage=outage) as server:
            before = drive(server.url, duration, abuser)
        with Server(with_toolkit=True, outage=outage) as server:
            after = drive(server.url, duration, abuser)
            metrics_url = f"{server.url}/metrics"
            metrics = httpx.get(metrics_url, timeout=10).raise_for_status().text
            stats = server.read_status("/stats?traces=0").raise_for_status().json()
            page = server.read_status("/status").status_code
    return Demo(
        duration,
        before,
        after,
        metrics_url,
        metrics,
        stats,
        server.status_url,
        server.status_token,
        page,
    )


def report(demo: Demo) -> str:
    """The table, the share of model calls the abusive client got, and the metrics behind it."""
    policy = demo.after.users.policy or demo.after.abusive.policy
    lines = [
        f"examples/quickstart/app.py, {demo.duration:g} s of traffic per phase:",
        f"  users    {USERS} API keys, each sending a chat every ~300 ms",
        f"  abusive  1 API key keeping {ABUSIVE_CONCURRENCY} chats in flight, as fast as answered",
        f"  vector store  drops {VECTOR_STORE_ERROR_RATE:.0%} of its connections, and does not "
        "answer from {:.1f} s to {:.1f} s".format(*outage_window(demo.duration)),
        "before:  the app alone; it builds an agent for every chat",
        f"after:   the same app with toolkit.install(); /chat answers RateLimit-Policy: {policy}",
        "         the model's answers cached per question (@toolkit.cached), the vector store",
        "         behind @toolkit.resilient, one shared agent from a pool (@toolkit.pooled);",
        "         each agent run traced (@toolkit.traced_agent), its search a step",
        "         (toolkit.step), its model call recorded with its tokens (toolkit.llm_call)",
        "",
        f"{'phase':<8}{'client':<9}{'requests':>9}{'2xx':>7}{'429':>7}{'other':>7}"
        f"{'p50 ms':>8}{'p95 ms':>8}",
    ]
    for phase, load in (("before", demo.before), ("after", demo.after)):
        for client, traffic in (("users", load.users), ("abusive", load.abusive)):
            lines.append(
                f"{phase:<8}{client:<9}{traffic.requests:>9}{traffic.allowed:>7}"
                f"{traffic.limited:>7}{traffic.errors:>7}"
                f"{traffic.percentile(0.50) * 1000:>8.0f}{traffic.percentile(0.95) * 1000:>8.0f}"
            )
    lines.append("")
    for phase, load in (("before", demo.before), ("after", demo.after)):
        served = load.users.allowed + load.abusive.allowed
        share = load.abusive.allowed / served if served else 0.0
        lines.append(
            f"{phase}: the abusive client got {load.abusive.allowed} of the {served} "
            f"answered chats ({share:.0%})"
        )
    cache = demo.model_cache()
    lookups = sum(cache.values())
    lines.append(
        f"before: {demo.before.users.allowed + demo.before.abusive.allowed} model calls; "
        f"after: {cache.get('miss', 0):.0f} model calls, {cache.get('hit', 0):.0f} answers "
        f"from the cache (hit ratio {cache.get('hit', 0) / lookups if lookups else 0:.0%})"
    )
    failed = [
        load.users.unavailable + load.abusive.unavailable for load in (demo.before, demo.after)
    ]
    calls = demo.vector_store_calls()
    lines.append(
        f"before: {failed[0]} chats failed on the vector store (503), the slowest after "
        f"{max(demo.before.users.latencies + demo.before.abusive.latencies):.1f} s; "
        f"after: {failed[1]}"
    )
    trips = demo.total(
        "toolkit_circuit_breaker_transitions_total", "toolkit_circuit_breaker_to_state", "open"
    )
    lines.append(
        f"after: the vector-store breaker opened {trips:.0f} {'time' if trips == 1 else 'times'}; "
        f"{calls.get('failure', 0) + calls.get('rejected', 0):.0f} chats were answered without "
        f"documents, {calls.get('rejected', 0):.0f} of them at once"
    )
    before_chats = demo.before.users.requests + demo.before.abusive.requests
    lines.append(
        f"agents built: before {before_chats} (one per chat); after "
        f"{demo.total('toolkit_pool_create_time_seconds_count'):.0f} (before the first request)"
    )
    rejected = demo.total(
        "toolkit_rate_limit_requests_total", "toolkit_rate_limit_result", "rejected"
    )
    lines += [
        "",
        f"The after server's own count, from {demo.metrics_url} as its traffic ended",
        '(429s are answered before routing, so their HTTP series has http_route="__unmatched__"):',
        *(line for line in demo.metrics.splitlines() if line.startswith(SHOWN_METRICS)),
        "",
        f"rejected by the toolkit: {rejected:.0f}; 429s received by the clients: "
        f"{demo.after.users.limited + demo.after.abusive.limited}",
        "",
        *agent_table(demo),
        "",
        f"The after server's status page was {demo.status_url} (sign in as {STATUS_USER!r} with",
        f"the read-only token {demo.status_token}); it stopped with the demo.",
        "To keep the app and its status page running: make demo ARGS=--serve",
    ]
    return "\n".join(lines)


def agent_table(demo: Demo) -> list[str]:
    """Per agent and per model: the after server's /stats, and what its cache spared."""
    lines = [
        f"Agents and models, from the after server's {ADMIN}/stats (read-only token):",
        f"{'':<7}{'name':<18}{'calls':>6}{'errors':>7}{'p50 ms':>8}{'p95 ms':>8}"
        f"{'tokens in':>11}{'out':>8}{'cost USD':>11}",
    ]
    for kind, key in (("agent", "agents"), ("model", "models")):
        for row in demo.stats.get(key, []):
            lines.append(
                f"{kind:<7}{row[kind]:<18}{row['count']:>6}{row['errors']:>7}"
                f"{row['p50'] * 1000:>8.1f}{row['p95'] * 1000:>8.1f}"
                f"{row['input_tokens']:>11,}{row['output_tokens']:>8,}{row['cost']:>11.6f}"
            )
    saved = demo.saved()
    spared = (saved["input"] * MODEL_PRICE["input"] + saved["output"] * MODEL_PRICE["output"]) / 1e6
    lines.append(
        f"cache hits spared {saved['calls']:.0f} model calls and "
        f"{saved['input'] + saved['output']:,.0f} tokens ({saved['input']:,.0f} in, "
        f"{saved['output']:,.0f} out), worth {spared:.6f} USD"
    )
    return lines


def serve(port: int) -> int:
    with Server(with_toolkit=True, port=port) as server:
        assert server.process is not None
        print(f"quickstart agent with the toolkit on {server.url}  (Ctrl-C stops it)")
        print(f"metrics: {server.url}/metrics")
        print(f"status page: {server.status_url}")
        print(f"  sign in as {STATUS_USER!r} with the read-only token {server.status_token}")
        print("try:")
        print(
            f"  curl -i {server.url}/chat -H 'X-API-Key: my-key' "
            """-H 'Content-Type: application/json' """
            """-d '{"message": "how long do refunds take?", "session_id": "s1"}'"""
        )
        print(f"  curl -s {server.url}/metrics | grep -E '^(toolkit|http_server|gen_ai)_'")
        print(
            f"  curl -s -H 'Authorization: Bearer {server.status_token}' {server.url}{ADMIN}/stats",
            flush=True,
        )
        try:
            return server.process.wait()
        except KeyboardInterrupt:
            print("\nstopping the server")
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.quickstart.demo", description=__doc__)
    parser.add_argument("--serve", action="store_true", help="run the app with the toolkit")
    parser.add_argument("--port", type=int, default=0, help="--serve port (default: a free one)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be more than 0 seconds")
    # Servers run in sessions of their own; on SIGTERM too, unwind so that they are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        if args.serve:
            return serve(args.port)
        print(report(run_demo(args.duration)))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
