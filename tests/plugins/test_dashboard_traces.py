"""The trace tables of the bundled dashboards: their TraceQL well formed (as far as the
subset they use goes: there is no Tempo here), about attributes the toolkit emits, and each
listing spans that the agents test app really produces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import toolkit
from tests.apps import agents
from tests.support.asgi import serving
from tests.support.openai_server import OpenAIServer
from tests.support.traceql import TraceQLSyntaxError, parse
from tests.unit.test_dashboards import targets
from tests.unit.test_telemetry_registry import DECLARED_ATTRIBUTES
from toolkit.settings import TelemetrySettings, ToolkitSettings
from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import TEMPO_DATASOURCE
from toolkit.telemetry.setup import setup_telemetry

GRAFANA_VARIABLES = {
    "$service": "agent-server",
    "$slow_agent_run": "100ms",  # the blocking agent holds the loop 250 ms
}


def trace_queries() -> Iterator[tuple[str, str]]:
    """Every trace table's query, the dashboard's variables substituted as Grafana would."""
    for where, target in targets(TEMPO_DATASOURCE):
        query = target["query"]
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"{where}: a variable the test does not substitute: {query}"
        yield where, query


def test_the_agents_dashboard_has_the_two_trace_tables() -> None:
    assert [where.partition(": ")[2] for where, _ in trace_queries()] == [
        "Slow agent runs [A]",
        "Failed model calls [A]",
    ]


def test_trace_queries_parse_and_name_only_attributes_the_toolkit_emits() -> None:
    """Every ``span.X`` is a declared attribute; every ``resource.X`` is on the resource of
    the providers the toolkit makes."""
    own = setup_telemetry(TelemetrySettings(), span_processors=[SimpleSpanProcessor(_Null())])
    try:
        resource = set(own.tracer_provider.resource.attributes)  # type: ignore[attr-defined]
    finally:
        own.shutdown()
    problems = []
    for where, query in trace_queries():
        for field in sorted(parse(query).attributes):
            scope, _, name = field.partition(".")
            if name not in (DECLARED_ATTRIBUTES if scope == "span" else resource):
                problems.append(f"{where}: {field}")
    assert not problems, "attributes the toolkit does not emit:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "query",
    [
        '{ span.a = "x" ',  # not closed
        '{ span.a "x" }',  # no operator
        "{ span.a = x }",  # an unquoted string
        '{ duration > "5s" }',  # a duration compared with a string
        '{ span.a = "x" } | select()',
        '{ span.a = "x" } | count()',
        '{ span.a =~ "(" }',  # not a regular expression
        "{ status = broken }",
    ],
)
def test_the_traceql_parser_refuses_malformed_queries(query: str) -> None:
    with pytest.raises(TraceQLSyntaxError):
        parse(query)


def test_the_traceql_parser_reads_the_subset() -> None:
    parsed = parse(
        '{ resource.service.name =~ "agent-.*" && span.gen_ai.operation.name = "chat" '
        "&& status = error && duration > 1.5s && kind = client } | select(span.error.type)"
    )
    assert parsed.attributes == {
        "resource.service.name",
        "span.gen_ai.operation.name",
        "span.error.type",
    }
    assert [condition.value for condition in parsed.conditions][3] == 1.5e9


@pytest.mark.anyio
async def test_every_trace_table_lists_spans_the_agents_app_produces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app's routes driven in process on the toolkit's own tracer provider (as a server
    with no provider of its own gets it), against the local OpenAI-compatible server: each
    table's filter matches some of its spans, and only spans of the kind the table is about."""
    server = OpenAIServer().__enter__()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    exporter = InMemorySpanExporter()
    meter_provider = MeterProvider()
    own = setup_telemetry(TelemetrySettings(), span_processors=[SimpleSpanProcessor(exporter)])
    app = FastAPI()
    app.include_router(agents.router)
    toolkit.install(
        app,
        ToolkitSettings(backend={"url": "memory://"}),
        tracer_provider=own.tracer_provider,
        meter_provider=meter_provider,
    )
    try:
        async with serving(app) as http:
            for path in agents.PATHS:
                agents.script_failures(server, path)
                response = await http.get(path)
                assert response.status_code == (502 if "/fail/" in path else 200), response.text
    finally:
        own.shutdown()
        meter_provider.shutdown()
        server.__exit__()
    spans = exporter.get_finished_spans()
    matched: dict[str, list[ReadableSpan]] = {}
    for where, query in trace_queries():
        parsed = parse(query)
        matched[where] = [span for span in spans if parsed.matches(span)]
        assert matched[where], f"{where}: no span of the agents app matches {query}"
    slow = matched["agent-server-agents.json: Slow agent runs [A]"]
    assert "archivist" in {span.attributes[names.GEN_AI_AGENT_NAME] for span in slow}
    assert all(span.end_time - span.start_time > 100e6 for span in slow)  # type: ignore[operator]
    assert all(span.name.startswith("invoke_agent") for span in slow)
    failed = matched["agent-server-agents.json: Failed model calls [A]"]
    assert {span.attributes[names.ERROR_TYPE] for span in failed} == {
        "503",
        "timeout",
        "connection",
    }
    assert all(span.status.status_code == StatusCode.ERROR for span in failed)


class _Null(InMemorySpanExporter):
    """Keeps nothing: only the provider's resource is looked at."""
