"""The rate-limit middleware: which requests it governs, what it answers, what it records."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.asgi import Serving, body_of, call, headers_of, http_scope, status_of
from tests.support.otel import counter_value
from tests.support.servers import free_port
from toolkit import RateLimitMiddleware
from toolkit.backends.redis import RedisBackend
from toolkit.flags import RATELIMIT, FlagStore
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("served")]


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def own_fields(request: Request) -> Response:
    return PlainTextResponse("mine", headers={"RateLimit": "made-up", "Retry-After": "7"})


async def stream(request: Request) -> Response:
    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield f"data: {i}\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


APP = Starlette(
    routes=[
        Route("/chat/{session}", ok, methods=["GET", "POST"]),
        Route("/admin/users", ok),
        Route("/health", ok),
        Route("/own", own_fields),
        Route("/stream", stream),
    ]
)


async def test_exempt_paths_are_never_limited() -> None:
    app = RateLimitMiddleware(APP, limit="1/minute", exempt=["/health", "/admin/*"])
    for path in ["/health", "/admin/users"]:
        for _ in range(3):
            messages = await call(app, http_scope(path))
            assert status_of(messages) == 200
            assert not any(k == "ratelimit" for k, _ in headers_of(messages))


async def test_route_templates_get_their_own_budget_per_route() -> None:
    app = RateLimitMiddleware(APP, limit="100/minute", routes={"/chat/{session}": "2/minute"})
    results = [status_of(await call(app, http_scope(f"/chat/s{i}"))) for i in range(3)]
    assert results == [200, 200, 429]  # one budget for the route, whatever the session
    assert status_of(await call(app, http_scope("/own"))) == 200  # the default still applies


@pytest.mark.parametrize("suffix", ["\n", "%0A"])
async def test_a_trailing_newline_does_not_escape_the_routes_policy(
    suffix: str, served: Serving
) -> None:
    """The router's route patterns end in "$", which also matches before a final newline:
    "/admin/users\n" reaches /admin/users, so it is charged to its policy, not let through."""
    app = RateLimitMiddleware(APP, limit="100/minute", routes={"/admin/users": "2/minute"})
    path = "/admin/users" + ("\n" if suffix == "\n" else "")
    scope = http_scope(path)
    if suffix == "%0A":  # as a server decodes it: raw_path keeps the escape, path the newline
        scope["path"] += "\n"
        scope["raw_path"] = scope["raw_path"] + b"%0A"
    plain = [status_of(await call(app, http_scope("/admin/users"))) for _ in range(2)]
    assert plain == [200, 200]
    messages = await call(app, scope)
    # Never served past the spent budget: refused, or (under a parent's Mount, whose own
    # slicing of such a path goes wrong) not routed at all.
    assert status_of(messages) == (404 if served.mount else 429)
    assert body_of(messages) != b"ok"


async def test_route_policies_can_target_methods() -> None:
    app = RateLimitMiddleware(
        APP, routes={"/chat/{session}": {"limit": "1/minute", "methods": ["POST"]}}
    )
    assert [status_of(await call(app, http_scope("/chat/a", method="POST"))) for _ in range(2)] == [
        200,
        429,
    ]
    assert [status_of(await call(app, http_scope("/chat/a"))) for _ in range(3)] == [200] * 3


async def test_the_fields_are_added_exactly_once_even_if_the_app_sets_them() -> None:
    app = RateLimitMiddleware(APP, limit="5/minute")
    headers = headers_of(await call(app, http_scope("/own")))
    assert [v for k, v in headers if k == "ratelimit"] == ['"default";r=4;t=12']
    assert [v for k, v in headers if k == "retry-after"] == ["7"]  # the app's own, kept


async def test_streaming_responses_pass_through_untouched() -> None:
    app = RateLimitMiddleware(APP, limit="5/minute")
    messages = await call(app, http_scope("/stream"))
    starts = [m for m in messages if m["type"] == "http.response.start"]
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert len(starts) == 1
    assert [m["body"] for m in bodies if m["body"]] == [f"data: {i}\n\n".encode() for i in range(5)]
    assert any(k == b"ratelimit" for k, _ in starts[0]["headers"])


async def test_a_failing_backend_fails_open_by_default(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    down = RedisBackend(
        f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, meter_provider=meter_provider
    )
    app = RateLimitMiddleware(APP, limit="1/minute", backend=down, meter_provider=meter_provider)
    for _ in range(3):
        messages = await call(app, http_scope("/chat/a"))
        assert status_of(messages) == 200
        assert not any(k == "ratelimit" for k, _ in headers_of(messages))  # nothing to report
    assert (
        counter_value(
            metric_reader, names.RATE_LIMIT_REQUESTS, **{"toolkit.rate_limit.result": "error"}
        )
        == 3
    )
    await down.close()


async def test_a_fail_closed_route_answers_503_when_the_backend_fails() -> None:
    down = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    app = RateLimitMiddleware(
        APP,
        limit="100/minute",
        backend=down,
        routes={"/admin/users": {"limit": "5/minute", "failure": "closed"}},
    )
    closed = await call(app, http_scope("/admin/users"))
    assert status_of(closed) == 503
    assert ("retry-after", "1") in headers_of(closed)
    assert json.loads(body_of(closed))["type"].endswith("#temporary-reduced-capacity")
    assert status_of(await call(app, http_scope("/chat/a"))) == 200
    await down.close()


async def test_shadow_mode_records_but_never_rejects_or_changes_responses(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    app = RateLimitMiddleware(APP, limit="2/minute", shadow=True, meter_provider=meter_provider)
    for _ in range(4):
        messages = await call(app, http_scope("/chat/a"))
        assert status_of(messages) == 200
        assert not any(k == "ratelimit" for k, _ in headers_of(messages))
    assert (
        counter_value(
            metric_reader, names.RATE_LIMIT_REQUESTS, **{"toolkit.rate_limit.result": "allowed"}
        )
        == 2
    )
    assert (
        counter_value(
            metric_reader,
            names.RATE_LIMIT_REQUESTS,
            **{"toolkit.rate_limit.result": "shadow_rejected"},
        )
        == 2
    )


async def test_flag_off_takes_exactly_the_path_without_the_toolkit() -> None:
    bare = await call(APP, http_scope("/chat/a"))
    app = RateLimitMiddleware(APP, limit="1/minute", flags=FlagStore(defaults={RATELIMIT: "off"}))
    for _ in range(3):
        assert await call(app, http_scope("/chat/a")) == bare


async def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    app = RateLimitMiddleware(inner, limit="1/minute")
    await app({"type": "websocket", "path": "/ws", "headers": []}, None, None)  # type: ignore[arg-type]
    await app({"type": "lifespan"}, _lifespan_messages(), None)  # type: ignore[arg-type]
    assert seen == ["websocket", "lifespan"]


def _lifespan_messages():  # type: ignore[no-untyped-def]
    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "lifespan.startup"}

    return receive


async def test_decisions_are_counted_and_put_on_the_current_span(
    metric_reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    app = RateLimitMiddleware(
        APP, limit="1/minute", caller="api_key", meter_provider=meter_provider
    )
    tracer = tracer_provider.get_tracer("t")
    for _ in range(2):
        with tracer.start_as_current_span("request"):
            await call(app, http_scope("/chat/a", headers=[("x-api-key", "sk-live-secret")]))
    allowed, rejected = span_exporter.get_finished_spans()
    for span, result in ((allowed, "allowed"), (rejected, "rejected")):
        (event,) = span.events
        assert event.name == names.RATE_LIMIT_DECISION_EVENT
        assert event.attributes[names.RATE_LIMIT_RESULT] == result
        assert event.attributes[names.RATE_LIMIT_POLICY] == "default"
        assert event.attributes[names.RATE_LIMIT_LIMIT] == "1 per 1 minute"
        key = span.attributes[names.RATE_LIMIT_KEY]
        assert "sk-live-secret" not in key
        assert len(key) == 32
    assert rejected.events[0].attributes[names.RATE_LIMIT_RESET] > 0
    for result in ("allowed", "rejected"):
        assert (
            counter_value(
                metric_reader,
                names.RATE_LIMIT_REQUESTS,
                **{"toolkit.rate_limit.policy": "default", "toolkit.rate_limit.result": result},
            )
            == 1
        )


async def test_routes_without_a_policy_are_not_touched() -> None:
    app = RateLimitMiddleware(APP, routes={"/admin/users": "1/minute"})
    assert await call(app, http_scope("/chat/a")) == await call(APP, http_scope("/chat/a"))


async def test_the_shadow_variant_of_the_flag_puts_every_policy_in_shadow(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    flags = FlagStore(defaults={RATELIMIT: "shadow"})
    app = RateLimitMiddleware(APP, limit="1/minute", flags=flags, meter_provider=meter_provider)
    statuses = [status_of(await call(app, http_scope("/chat/a"))) for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert (
        counter_value(
            metric_reader,
            names.RATE_LIMIT_REQUESTS,
            **{"toolkit.rate_limit.result": "shadow_rejected"},
        )
        == 2
    )
