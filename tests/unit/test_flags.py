"""Feature flags: evaluation, sticky rollouts, live changes across stores, outages, telemetry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Receive, Scope, Send

import toolkit
from tests.support.asgi import call, http_scope
from tests.support.otel import counter_value
from tests.support.servers import RedisServer, free_port, require_binary
from tests.support.waiting import eventually
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends._reconnect import Reconnect
from toolkit.backends.redis import RedisBackend
from toolkit.errors import ConfigurationError
from toolkit.flags import (
    RATELIMIT,
    TRACING,
    FlagContextMiddleware,
    FlagStore,
    bucket,
    declare,
    feature,
    override,
)
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio

declare("test.prompt-v2", description="a new prompt")
declare("test.model", variants={"small": "gpt-small", "large": "gpt-large"}, default="small")


@pytest.fixture
async def stores(backend: Backend) -> AsyncIterator[tuple[FlagStore, FlagStore]]:
    """Two running stores on one backend: two instances of an app."""
    first, second = FlagStore(backend), FlagStore(backend)
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


async def test_flags_answer_their_declared_defaults() -> None:
    store = FlagStore(defaults={TRACING: "off"})
    assert store.evaluate(RATELIMIT).variant == "on"
    assert store.evaluate(RATELIMIT).reason == "default"
    assert not store.is_enabled(TRACING)  # the setting's default
    assert store.evaluate("test.model").value == "gpt-small"
    assert not store.is_enabled("test.prompt-v2")
    unknown = store.evaluate("nobody.declared.this")
    assert (unknown.variant, unknown.reason) == ("off", "error")


async def test_a_change_in_one_store_reaches_the_other(
    stores: tuple[FlagStore, FlagStore],
) -> None:
    first, second = stores
    await first.set(RATELIMIT, "shadow", by="ops")
    assert first.variant(RATELIMIT) == "shadow"  # at once where it was made
    took = await eventually(lambda: second.variant(RATELIMIT) == "shadow", 1.0)
    assert took < 1.0
    await first.reset(RATELIMIT, by="ops")
    await eventually(lambda: second.evaluate(RATELIMIT).reason == "default", 1.0)
    history = await second.history()
    assert [(c["key"], c["new"], c["by"]) for c in history] == [
        (RATELIMIT, None, "ops"),
        (RATELIMIT, {"variant": "shadow"}, "ops"),
    ]
    assert history[0]["old"] == {"variant": "shadow"}
    assert history[0]["at"] >= history[1]["at"] > time.time() - 60


async def test_invalid_changes_are_refused_before_reaching_the_backend(backend: Backend) -> None:
    store = FlagStore(backend)
    with pytest.raises(ConfigurationError, match="no variant 'maybe'"):
        await store.set(RATELIMIT, "maybe", by="ops")
    with pytest.raises(ConfigurationError, match="between 0 and 100"):
        await store.rollout("test.prompt-v2", "on", 150, by="ops")
    with pytest.raises(ConfigurationError, match=r"no flag 'no\.such'"):
        await store.set("no.such", "on", by="ops")
    assert await store.history() == []


async def test_rollouts_are_sticky_and_hit_their_share(backend: Backend) -> None:
    """Over 100,000 subjects the share is within 1 % of the target, and a subject inside at
    a lower percentage stays inside as it rises."""
    store = FlagStore(backend)
    subjects = [f"api_key:user-{i}" for i in range(100_000)]
    inside_before: set[str] = set()
    for percentage in (1, 10, 20, 50, 90):
        await store.rollout("test.prompt-v2", "on", percentage, by="ops")
        inside = {s for s in subjects if store.is_enabled("test.prompt-v2", caller=s)}
        assert abs(len(inside) / len(subjects) * 100 - percentage) < 1
        assert inside_before <= inside
        inside_before = inside
    evaluation = store.evaluate("test.prompt-v2", caller=subjects[0])
    assert evaluation.reason == "split"


def test_buckets_differ_between_flags() -> None:
    subjects = [f"u{i}" for i in range(1000)]
    same = sum(bucket("a", s) // 100 == bucket("b", s) // 100 for s in subjects)
    assert same < 50  # independent placements: ~1 % agree by chance


async def test_a_request_sees_one_snapshot_even_if_a_flag_flips_midway(
    backend: Backend,
) -> None:
    store = FlagStore(backend)
    await store.start()
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(toolkit.flags.variant(RATELIMIT))
        if scope["path"] == "/flip":
            await store.set(RATELIMIT, "off", by="ops")  # lands mid-request
        seen.append(toolkit.flags.variant(RATELIMIT))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pinned = FlagContextMiddleware(app, store=store)
    await call(pinned, http_scope("/flip"))
    await call(pinned, http_scope("/after"))
    assert seen == ["on", "on", "off", "off"]
    await store.stop()


async def test_rollouts_bucket_each_request_by_its_subject(backend: Backend) -> None:
    store = FlagStore(backend)
    await store.rollout("test.prompt-v2", "on", 50, by="ops")
    answers: dict[str, bool] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        answers[scope["client"][0]] = toolkit.flags.is_enabled("test.prompt-v2")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pinned = FlagContextMiddleware(app, store=store)
    for i in range(200):
        await call(pinned, http_scope(client=(f"10.0.{i // 250}.{i % 250}", 1)))
    expected = {ip: bucket("test.prompt-v2", f"client:{ip}") < 5000 for ip in answers}
    assert answers == expected
    assert 60 < sum(answers.values()) < 140


async def test_override_wins_in_its_context_only() -> None:
    store = FlagStore(defaults={RATELIMIT: "on"})
    with override({RATELIMIT: "off", "test.prompt-v2": True}):
        assert store.variant(RATELIMIT) == "off"
        assert store.is_enabled("test.prompt-v2")
        assert store.evaluate(RATELIMIT).reason == "static"
    assert store.variant(RATELIMIT) == "on"


async def test_feature_chooses_the_new_or_the_old_implementation() -> None:
    async def old_answer(question: str) -> str:
        return f"v1: {question}"

    @feature("test.answer-v2", fallback=old_answer)
    async def new_answer(question: str) -> str:
        return f"v2: {question}"

    def old_prompt(name: str) -> str:
        return f"Hello {name}"

    @feature("test.prompt-greeting", fallback=old_prompt)
    def new_prompt(name: str) -> str:
        return f"Hi {name}!"

    assert await new_answer("why?") == "v1: why?"
    assert new_prompt("Ada") == "Hello Ada"
    with override({"test.answer-v2": True, "test.prompt-greeting": "on"}):
        assert await new_answer("why?") == "v2: why?"
        assert new_prompt("Ada") == "Hi Ada!"
    assert asyncio.iscoroutinefunction(new_answer)
    assert new_answer.__name__ == "new_answer"


async def test_an_unreachable_backend_neither_blocks_startup_nor_loses_values() -> None:
    """Redis down at startup: start() returns within the timeout, defaults serve, marked
    stale. Redis gone later: the last known values serve, stale. Redis back: live again."""
    server = RedisServer(require_binary("redis-server"), port=free_port())
    backend = RedisBackend(
        server.url, timeout=0.2, reconnect=Reconnect(initial_delay=0.05, max_delay=0.2)
    )
    store = FlagStore(backend, resync_interval=0.2)
    started = time.monotonic()
    await store.start()
    assert time.monotonic() - started < 0.5
    assert store.evaluate(RATELIMIT).reason == "stale"
    assert store.variant(RATELIMIT) == "on"

    server.start()
    await eventually(lambda: not store.stale, 3.0)
    await store.set(RATELIMIT, "shadow", by="ops")
    server.stop()
    await eventually(lambda: store.stale, 3.0)
    evaluation = store.evaluate(RATELIMIT)
    assert (evaluation.variant, evaluation.reason) == ("shadow", "stale")

    server.start()  # an empty Redis: the override is gone, and the store follows
    await eventually(lambda: not store.stale, 3.0)
    assert store.evaluate(RATELIMIT).reason == "default"
    await store.stop()
    await backend.close()
    server.stop()


async def test_the_resync_serves_what_no_notice_announced_at_each_interval(
    backend: Backend,
) -> None:
    """An override stored without a notice (one the subscription missed) is served after the
    next resync, which waits ``resync_interval`` on the clock it is given."""
    waits: list[float] = []
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await ticks.get()

    store = FlagStore(backend, resync_interval=30, sleep=sleep)
    await store.start()
    try:
        await backend.flags_save(
            RATELIMIT, '{"variant": "off"}', {}, channel="elsewhere", history_length=10
        )
        assert store.variant(RATELIMIT) == "on"  # nothing announced it
        assert waits == [30]
        ticks.put_nowait(None)
        await eventually(lambda: store.variant(RATELIMIT) == "off")
        await eventually(lambda: waits == [30, 30])  # and waits for the next one
    finally:
        await store.stop()


async def test_evaluations_are_counted_and_traced_with_semantic_convention_names(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    store = FlagStore(MemoryBackend(), meter_provider=meter_provider)
    await store.set("test.model", "large", by="ops")
    with tracer_provider.get_tracer("t").start_as_current_span("request"):
        store.evaluate(RATELIMIT)  # a kill switch at its default: counted, no event
        store.evaluate("test.model")
        store.evaluate("never.declared")
    (span,) = span_exporter.get_finished_spans()
    assert [dict(e.attributes) for e in span.events] == [
        {
            "feature_flag.key": "test.model",
            "feature_flag.result.variant": "large",
            "feature_flag.result.reason": "static",
            "feature_flag.provider.name": "agent-server-toolkit",
        },
        {
            "feature_flag.key": "__undeclared__",
            "feature_flag.result.variant": "off",
            "feature_flag.result.reason": "error",
            "feature_flag.provider.name": "agent-server-toolkit",
        },
    ]
    assert {e.name for e in span.events} == {names.FEATURE_FLAG_EVALUATION_EVENT}
    assert (
        counter_value(
            metric_reader,
            names.FEATURE_FLAG_EVALUATIONS,
            **{"feature_flag.key": RATELIMIT, "feature_flag.result.reason": "default"},
        )
        == 1
    )


async def test_changes_are_logged_and_counted_where_they_are_applied(
    caplog: pytest.LogCaptureFixture,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    backend = MemoryBackend()
    writer = FlagStore(backend)
    follower = FlagStore(backend, meter_provider=meter_provider)
    await writer.start()
    await follower.start()
    with caplog.at_level(logging.INFO, logger="toolkit.flags"):
        await writer.set(TRACING, "off", by="ops")
        await eventually(lambda: follower.variant(TRACING) == "off")
    assert any("flag tracing changed" in r.getMessage() for r in caplog.records)
    assert (
        counter_value(metric_reader, names.FEATURE_FLAG_CHANGES, **{"feature_flag.key": "tracing"})
        == 1
    )
    await writer.stop()
    await follower.stop()


async def test_declarations_reach_operators_tools_through_the_backend(backend: Backend) -> None:
    from toolkit.flags._registry import Registry

    app_side = FlagStore(backend)
    await app_side.start()
    cli_registry = Registry()  # a process that never imported the app
    cli_side = FlagStore(backend, registry=cli_registry)
    assert "test.model" not in cli_registry.definitions
    await cli_side.load_declarations()
    await cli_side.set("test.model", "large", by="cli")
    await eventually(lambda: app_side.variant("test.model") == "large")
    await app_side.stop()
