"""``make demo``: the quickstart's two phases on real uvicorn processes, and ``--serve``."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from examples.quickstart.app import (
    DOCUMENTS,
    INSTRUCTIONS,
    MODEL,
    MODEL_PRICE,
    VECTOR_STORE_TIMEOUT,
    count_tokens,
)
from examples.quickstart.demo import (
    ABUSIVE_MESSAGE,
    QUESTIONS,
    ROOT,
    SHOWN_METRICS,
    STATUS_USER,
    Demo,
    agent_table,
    report,
    run_demo,
)

pytestmark = pytest.mark.slow

DURATION = 3.0  # the vector store is down for 0.9 s of it: time to trip its breaker
CHAT_BURST, CHAT_PER_SECOND = 5, 5  # app.py: "/chat": "5/second", which GCRA may spend at once


@pytest.fixture(scope="module")
def demo() -> Demo:
    return run_demo(DURATION)


def test_without_the_toolkit_nobody_is_limited(demo: Demo) -> None:
    for traffic in (demo.before.users, demo.before.abusive):
        assert traffic.requests > 0
        assert traffic.limited == 0
        assert traffic.allowed + traffic.unavailable == traffic.requests
        assert traffic.policy is None  # no RateLimit fields either


def test_with_the_toolkit_only_the_abusive_client_is_limited(demo: Demo) -> None:
    users, abusive = demo.after.users, demo.after.abusive
    assert users.requests >= 8
    assert users.allowed == users.requests
    assert abusive.limited > 0
    assert abusive.errors == 0
    # Its whole burst, then one request per emission interval, and not one more.
    assert CHAT_BURST <= abusive.allowed <= CHAT_BURST + CHAT_PER_SECOND * DURATION + 1
    assert users.policy == abusive.policy == '"/chat";q=5;w=1'


def test_the_abusive_client_loses_its_share_of_the_model(demo: Demo) -> None:
    """Without the toolkit it gets more answered chats than the limit would allow, and a
    larger share of all answered chats than with it (about half against a fifth, on an idle
    machine; the outage, which holds its 16 chats at once, and a busy machine move both)."""
    assert demo.before.abusive.allowed > CHAT_BURST + CHAT_PER_SECOND * DURATION + 1
    shares = [
        load.abusive.allowed / (load.abusive.allowed + load.users.allowed)
        for load in (demo.before, demo.after)
    ]
    assert shares[0] > shares[1]


def test_the_report_shows_the_servers_own_counts(demo: Demo) -> None:
    """The printed metric lines are the after server's, and they agree with the clients."""
    text = report(demo)
    shown = [line for line in demo.metrics.splitlines() if line.startswith(SHOWN_METRICS)]
    assert {line.partition("{")[0] for line in shown} == set(SHOWN_METRICS)
    for line in shown:
        assert line in text.splitlines()

    answered = demo.after.users.allowed + demo.after.abusive.allowed
    rejected = demo.after.abusive.limited
    decisions = {
        labels["toolkit_rate_limit_result"]: value
        for labels, value in demo.samples("toolkit_rate_limit_requests_total")
        if labels["toolkit_rate_limit_policy"] == "/chat"
    }
    assert decisions == {"allowed": answered, "rejected": rejected}
    requests = {
        (labels["http_route"], labels["http_response_status_code"]): value
        for labels, value in demo.samples("http_server_request_duration_seconds_count")
        if labels["http_request_method"] == "POST"
    }
    assert requests == {("/chat", "200"): answered, ("__unmatched__", "429"): rejected}
    assert f"rejected by the toolkit: {rejected}; 429s received by the clients: {rejected}" in text


def test_the_model_runs_once_per_distinct_question_with_the_toolkit(demo: Demo) -> None:
    """The users ask a handful of questions again and again: with the toolkit each distinct
    one (the users' five, the abusive client's one; with its documents, and without them
    while the vector store is down) reaches the model once; every other answered chat is a
    cache hit, and the report says so."""
    answered = demo.after.users.allowed + demo.after.abusive.allowed
    cache = demo.model_cache()
    assert cache["miss"] <= 2 * (len(QUESTIONS) + 1)
    assert cache["hit"] + cache["miss"] == answered
    assert f"after: {cache['miss']:.0f} model calls, {cache['hit']:.0f} answers" in report(demo)


def test_a_vector_store_outage_fails_chats_without_the_toolkit_and_none_with_it(
    demo: Demo,
) -> None:
    """Without the toolkit, chats wait out the store's own timeout and fail; with it, a
    deadline, retries and an open breaker answer every chat, without documents when need be."""
    before = demo.before.users.latencies + demo.before.abusive.latencies
    assert demo.before.users.unavailable + demo.before.abusive.unavailable > 0
    assert max(before) >= VECTOR_STORE_TIMEOUT
    after = demo.after.users.latencies + demo.after.abusive.latencies
    assert demo.after.users.unavailable + demo.after.abusive.unavailable == 0
    assert max(after) < VECTOR_STORE_TIMEOUT, sorted(after)[-5:]  # nobody waited for the store

    calls = demo.vector_store_calls()
    trips = demo.total(
        "toolkit_circuit_breaker_transitions_total", "toolkit_circuit_breaker_to_state", "open"
    )
    assert trips >= 1, calls
    assert calls.get("rejected", 0) > 0, calls  # refused at once while open, then the fallback
    assert sum(calls.values()) == sum(demo.model_cache().values())  # one of each per chat
    fallbacks = calls.get("failure", 0) + calls["rejected"]
    assert f"{fallbacks:.0f} chats were answered without" in report(demo)


def test_the_agent_is_built_once_with_the_toolkit(demo: Demo) -> None:
    """Without it every chat builds its agent; with it, one shared agent built at startup."""
    assert demo.total("toolkit_pool_create_time_seconds_count") == 1
    built = demo.before.users.requests + demo.before.abusive.requests
    assert f"agents built: before {built} (one per chat); after 1" in report(demo)


def test_the_report_shows_each_agent_and_model_with_calls_tokens_and_cost(demo: Demo) -> None:
    """The table under the comparison is the after server's /stats: one agent run per answered
    chat, one model call per cache miss, the agent's tokens and cost those of the model calls
    made inside its runs, the cost the tokens at app.py's price."""
    answered = demo.after.users.allowed + demo.after.abusive.allowed
    (agent,) = demo.stats["agents"]
    (model,) = demo.stats["models"]
    assert agent["agent"] == "support-agent"
    assert agent["count"] == answered
    assert model["model"] == MODEL
    assert model["count"] == demo.model_cache()["miss"] > 0
    assert model["input_tokens"] > 0
    assert model["output_tokens"] > 0
    for key in ("input_tokens", "output_tokens", "cost"):
        assert agent[key] == pytest.approx(model[key])
    price = model["input_tokens"] * MODEL_PRICE["input"]
    price += model["output_tokens"] * MODEL_PRICE["output"]
    assert model["cost"] == pytest.approx(price / 1e6)
    assert 0 < model["p50"] <= model["p95"]
    assert 0 < agent["p50"] <= agent["p95"]

    text = report(demo).splitlines()
    for kind, row in (("agent", agent), ("model", model)):
        (line,) = [line for line in text if line.startswith(f"{kind}  {row[kind]} ")]
        calls, errors, p50, p95, tokens_in, tokens_out, cost = line.split()[2:]
        assert (int(calls), int(errors)) == (row["count"], 0)
        assert float(p50) == pytest.approx(row["p50"] * 1000, abs=0.05)
        assert float(p95) == pytest.approx(row["p95"] * 1000, abs=0.05)
        assert int(tokens_in.replace(",", "")) == row["input_tokens"]
        assert int(tokens_out.replace(",", "")) == row["output_tokens"]
        assert float(cost) == pytest.approx(row["cost"], abs=1e-6)
        assert float(cost) > 0


def test_the_report_shows_what_the_cache_hits_spared(demo: Demo) -> None:
    """Every cache hit spared the one model call its entry's computation made, with that
    call's tokens: the toolkit.cache.saved.* counters, in the last line of the table."""
    saved = demo.saved()
    hits = demo.model_cache()["hit"]
    assert saved["calls"] == hits > 0
    # A hit spares the input tokens of one model call: the instructions and the question,
    # with the documents found (at most two) or none while the vector store was down.
    asked = [count_tokens(question) for question in (*QUESTIONS, ABUSIVE_MESSAGE)]
    documents = sorted(map(count_tokens, DOCUMENTS.values()))
    least = count_tokens(INSTRUCTIONS) + min(asked)
    most = count_tokens(INSTRUCTIONS) + max(asked) + sum(documents[-2:])
    assert hits * least <= saved["input"] <= hits * most
    assert saved["output"] >= hits
    spared = (saved["input"] * MODEL_PRICE["input"] + saved["output"] * MODEL_PRICE["output"]) / 1e6
    assert agent_table(demo)[-1] == (
        f"cache hits spared {hits:.0f} model calls and {saved['input'] + saved['output']:,.0f} "
        f"tokens ({saved['input']:,.0f} in, {saved['output']:,.0f} out), worth {spared:.6f} USD"
    )


def test_the_status_page_answers_with_the_demos_read_only_token(demo: Demo) -> None:
    """The after server's status page answered 200 with the token the report prints."""
    assert demo.status_page == 200
    text = report(demo)
    assert demo.status_url.endswith("/_toolkit/status")
    assert f"was {demo.status_url} (sign in as {STATUS_USER!r} with" in text
    assert f"the read-only token {demo.status_token})" in text


def test_serve_runs_the_app_with_the_toolkit_until_ctrl_c() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.quickstart.demo", "--serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()
        assert first.startswith("quickstart agent with the toolkit on http://127.0.0.1:")
        url = first.split(" on ")[1].split()[0]
        assert demo.stdout.readline() == f"metrics: {url}/metrics\n"
        assert demo.stdout.readline() == f"status page: {url}/_toolkit/status\n"
        sign_in = demo.stdout.readline()
        assert sign_in.startswith(f"  sign in as {STATUS_USER!r} with the read-only token ")
        token = sign_in.split()[-1]
        chat = httpx.post(
            f"{url}/chat",
            json={"message": "how long do refunds take?", "session_id": "s1"},
            headers={"X-API-Key": "k1"},
        )
        assert chat.status_code == 200
        assert chat.json()["sources"] == ["refunds"]
        assert chat.headers["ratelimit-policy"] == '"/chat";q=5;w=1'
        metrics = httpx.get(f"{url}/metrics").text
        assert 'toolkit_rate_limit_requests_total{toolkit_rate_limit_policy="/chat"' in metrics

        # The page a browser opens: it asks for the name and token (HTTP Basic), then answers.
        assert httpx.get(f"{url}/_toolkit/status").status_code == 401
        page = httpx.get(f"{url}/_toolkit/status", auth=(STATUS_USER, token))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        stats = httpx.get(f"{url}/_toolkit/stats", headers={"Authorization": f"Bearer {token}"})
        assert stats.status_code == 200
        assert [(row["agent"], row["count"]) for row in stats.json()["agents"]] == [
            ("support-agent", 1)
        ]
        # Read-only: a change (purging the model cache) is refused.
        purge = httpx.post(
            f"{url}/_toolkit/cache/invalidate",
            json={"namespace": "model"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert purge.status_code == 403

        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(15)
        if demo.stdout is not None:
            demo.stdout.close()
