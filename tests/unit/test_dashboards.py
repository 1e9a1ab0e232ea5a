"""The bundled Grafana dashboards: generated from the name registry, committed as generated,
and every query well formed and about metrics the toolkit really emits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promtool import promql_test_problems
from tests.support.servers import ROOT
from tests.unit.test_telemetry_registry import drive_every_capability
from toolkit.telemetry import names
from toolkit.telemetry.dashboards import (
    DATASOURCE,
    build_dashboards,
    prometheus_label,
    prometheus_name,
    render,
    series,
)
from toolkit.telemetry.dashboards.layout import (
    WIDTH,
    Row,
    build_dashboard,
    stat,
    timeseries,
)

DASHBOARDS = ROOT / "dashboards"
SUFFIXES = {
    "histogram": ("_bucket", "_count", "_sum"),
    "counter": ("",),
    "updowncounter": ("",),
    "gauge": ("",),
}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[([^\]]*)\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def metric_tokens(expr: str) -> list[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in matchers or grouping) or inside strings."""
    bare = _GROUPING.sub("", _RANGES.sub("", _MATCHERS.sub("", _STRINGS.sub('""', expr))))
    return [
        match[1]
        for match in _IDENTIFIER.finditer(bare)
        if not match[2] and match[1].lower() not in _KEYWORDS
    ]


def label_tokens(expr: str) -> set[str]:
    """Label names used in matchers and in by/without/on/ignoring lists."""
    text = _STRINGS.sub('""', expr)
    labels = {
        label
        for block in _MATCHERS.findall(text)
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", block)
    }
    labels |= {
        label.strip() for group in _GROUPING.findall(text) for label in group.split(",") if label
    }
    return labels


def declared_series() -> dict[str, str]:
    """Every Prometheus series name of every declared metric -> the metric's OTel name."""
    return {
        series(metric, suffix): metric
        for metric, record in names.METRIC_RECORDS.items()
        for suffix in SUFFIXES[record.kind.points]
    }


def panels(datasource: dict[str, str] | None = DATASOURCE) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every panel on ``datasource`` (Prometheus by default; None: every panel)."""
    for file_name, dashboard in build_dashboards().items():
        for panel in dashboard["panels"]:
            if panel["type"] != "row" and datasource in (None, panel["datasource"]):
                yield f"{file_name}: {panel['title']}", panel


def targets(datasource: dict[str, str] = DATASOURCE) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, panel in panels(datasource):
        for target in panel["targets"]:
            yield f"{where} [{target['refId']}]", target


# --- Generated, and committed as generated -----------------------------------------------------
def test_committed_dashboards_are_what_the_generator_writes() -> None:
    generated = build_dashboards()
    for file_name, dashboard in generated.items():
        committed = DASHBOARDS / file_name
        assert committed.exists(), f"{committed} is missing: run `agent-toolkit dashboards`"
        assert committed.read_bytes() == render(dashboard).encode(), (
            f"{committed} differs from the generator: run `agent-toolkit dashboards`"
        )
    stale = {p.name for p in DASHBOARDS.glob("*.json")} - set(generated)
    assert not stale, f"dashboards no longer generated: {stale}"


def test_rendering_is_stable_json_with_a_trailing_newline() -> None:
    again = build_dashboards()
    for file_name, dashboard in build_dashboards().items():
        text = render(dashboard)
        assert text.endswith("}\n")
        assert text == render(json.loads(text)) == render(again[file_name])


def test_cli_writes_the_dashboards(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "dashboards", "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for file_name in build_dashboards():
        written = tmp_path / "out" / file_name
        assert str(written) in result.stdout
        assert written.read_bytes() == (DASHBOARDS / file_name).read_bytes()


def test_one_dashboard_per_concern_with_stable_identities_and_variables() -> None:
    identities = {
        file_name: (dashboard["uid"], dashboard["title"], [row["title"] for row in rows(dashboard)])
        for file_name, dashboard in build_dashboards().items()
    }
    assert identities == {
        "agent-server-http.json": (
            "toolkit-http-ratelimit",
            "Agent server — HTTP & rate limiting",
            ["HTTP", "Rate limiting", "Backend", "Event loop"],
        ),
        "agent-server-caches.json": ("toolkit-caches", "Agent server — Caches", ["Caches"]),
        "agent-server-resilience-pools.json": (
            "toolkit-resilience-pools",
            "Agent server — Resilience & pools",
            ["Resilience", "Agent pools", "Deferred work"],
        ),
        "agent-server-flags.json": (
            "toolkit-feature-flags",
            "Agent server — Feature flags",
            ["Feature flags"],
        ),
        "agent-server-agents.json": (
            "toolkit-agents",
            "Agent server — Agents and LLM calls",
            [
                "Model calls",
                "Agents",
                "Pipelines",
                "Cache savings",
                "Event loop",
                "Offloaded calls",
                "Traces",
            ],
        ),
    }
    count = series(names.HTTP_SERVER_REQUEST_DURATION, "_count")
    for file_name, dashboard in build_dashboards().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        if file_name == "agent-server-agents.json":  # the one with trace tables
            assert list(variables) == [
                "DS_PROMETHEUS",
                "DS_TEMPO",
                "job",
                "instance",
                "service",
                "slow_agent_run",
            ]
            assert variables["DS_TEMPO"]["type"] == "datasource"
            assert variables["DS_TEMPO"]["query"] == "tempo"
            assert {variables[name]["type"] for name in ("service", "slow_agent_run")} == {
                "textbox"
            }
        else:
            assert list(variables) == ["DS_PROMETHEUS", "job", "instance"]
        assert variables["DS_PROMETHEUS"]["type"] == "datasource"
        assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
        assert variables["job"]["query"] == f"label_values({count}, job)"
        assert variables["instance"]["query"] == f'label_values({count}{{job=~"$job"}}, instance)'
        for name in ("job", "instance"):
            assert variables[name]["datasource"] == DATASOURCE
            assert variables[name]["allValue"] == ".*"
        assert "agent-server-toolkit" in dashboard["tags"]
        (menu,) = dashboard["links"]  # every bundled dashboard, one click away
        assert menu["type"] == "dashboards"
        assert menu["tags"] == ["agent-server-toolkit"]


def rows(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] == "row"]


def test_panel_titles_are_unique_across_dashboards() -> None:
    """The Prometheus test, the README and the runbook find a panel by its title alone: two
    panels with one title are one row shown on two dashboards (the event loop's)."""
    by_title: dict[str, list[dict[str, Any]]] = {}
    for where, panel in panels(None):
        by_title.setdefault(where.partition(": ")[2], []).append(panel)
    differing = sorted(
        title
        for title, same in by_title.items()
        if any(
            {**panel, "gridPos": None, "id": None} != {**same[0], "gridPos": None, "id": None}
            for panel in same
        )
    )
    assert not differing, differing
    shared = sorted(title for title, same in by_title.items() if len(same) > 1)
    assert shared == [
        "Blocked-loop events by cause",
        "Event-loop lag (p50, p99)",
        "Event-loop tasks",
    ]


# --- Layout ------------------------------------------------------------------------------------
def test_rows_stack_themselves_and_panels_flow_left_to_right() -> None:
    """Each row starts under the last one's tallest panel; panels wrap at 24 columns."""

    def sized(title: str, width: int, height: int) -> dict[str, Any]:
        return timeseries(
            title, "a panel of the layout test", "short", [], width=width, height=height
        )

    built = build_dashboard(
        uid="test",
        title="Test",
        shows="Nothing",
        tags=[],
        rows=[
            Row(
                "first",
                [stat("a", "a stat panel", "short", []), sized("b", 16, 6), sized("c", 24, 3)],
            ),
            Row("second", [sized("d", 12, 8)]),
        ],
        instances_of="up",
    )
    positions = {
        panel["title"]: tuple(panel["gridPos"][k] for k in ("x", "y", "w", "h"))
        for panel in built["panels"]
    }
    assert positions == {
        "first": (0, 0, WIDTH, 1),
        "a": (0, 1, 8, 4),
        "b": (8, 1, 16, 6),
        "c": (0, 7, 24, 3),
        "second": (0, 10, WIDTH, 1),
        "d": (0, 11, 12, 8),
    }
    assert [panel["id"] for panel in built["panels"]] == [1, 2, 3, 4, 5, 6]


# --- Prometheus names --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        (
            "toolkit.rate_limit.requests",
            "{request}",
            "counter",
            "toolkit_rate_limit_requests_total",
        ),
        ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
        (
            "http.server.active_requests",
            "{request}",
            "updowncounter",
            "http_server_active_requests",
        ),
        ("queue.wait.seconds", "s", "histogram", "queue_wait_seconds"),
        ("payload.size", "By", "histogram", "payload_size_bytes"),
        ("cache.hit-ratio", "1", "gauge", "cache_hit_ratio"),
        ("tokens", "{token}", "counter", "tokens_total"),
        ("llm.latency", "ms", "gauge", "llm_latency_milliseconds"),
    ],
)
def test_prometheus_name(name: str, unit: str, kind: Any, expected: str) -> None:
    assert prometheus_name(name, unit, kind) == expected


def test_prometheus_label() -> None:
    assert prometheus_label(names.HTTP_ROUTE) == "http_route"
    assert prometheus_label(names.RATE_LIMIT_POLICY) == "toolkit_rate_limit_policy"


@pytest.mark.anyio
async def test_series_names_are_those_the_toolkit_exposes() -> None:
    """The names computed from the records against the real Prometheus exposition."""
    registry = CollectorRegistry()
    meter_provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry, scope_info_enabled=False)]
    )
    try:
        installed = await drive_every_capability(TracerProvider(), meter_provider)
        exposition = generate_latest(registry).decode()
        del installed  # kept alive until its instruments were read
    finally:
        meter_provider.shutdown()
    exposed = {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    missing = sorted(set(declared_series()) - exposed)
    assert not missing, f"computed names the exposition does not have: {missing}"


# --- Lint --------------------------------------------------------------------------------------
def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    for dashboard in build_dashboards().values():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
        cells: dict[tuple[int, int], str] = {}
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_every_panel_has_a_unit_a_description_and_targets_on_the_datasource_variable() -> None:
    """Metric panels chart Prometheus with a unit; trace tables list spans from Tempo."""
    problems = []
    sources = {
        "timeseries": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
        "stat": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
        "table": {"type": "tempo", "uid": "${DS_TEMPO}"},
    }
    for where, panel in panels(None):
        source = sources.get(panel["type"])
        if source is None:
            problems.append(f"{where}: a {panel['type']} panel")
            continue
        if source["type"] == "prometheus" and not panel["fieldConfig"]["defaults"].get("unit"):
            problems.append(f"{where}: no unit")
        if len(panel.get("description", "")) < 20:
            problems.append(f"{where}: no description")
        if panel["datasource"] != source:
            problems.append(f"{where}: panel datasource {panel['datasource']}")
        if not panel["targets"]:
            problems.append(f"{where}: no targets")
        ref_ids = [target["refId"] for target in panel["targets"]]
        if len(ref_ids) != len(set(ref_ids)):
            problems.append(f"{where}: duplicate refIds {ref_ids}")
        for target in panel["targets"]:
            if target["datasource"] != source:
                problems.append(f"{where}: target datasource {target['datasource']}")
            if source["type"] == "tempo" and target.get("queryType") != "traceql":
                problems.append(f"{where}: not a TraceQL query")
    assert not problems, "\n".join(problems)


def test_ranges_are_grafana_intervals_and_counters_are_rated() -> None:
    problems = []
    for where, target in targets():
        expr = _STRINGS.sub('""', target["expr"])
        for found in _RANGES.findall(expr):
            if found not in ("$__rate_interval", "$__range"):
                problems.append(f"{where}: literal range [{found}]")
        for found in re.findall(r"\brate\([^\[]*\[([^\]]*)\]", expr):
            if found != "$__rate_interval":
                problems.append(f"{where}: rate() over [{found}], not $__rate_interval")
        bare = _MATCHERS.sub("", expr)
        for match in _IDENTIFIER.finditer(bare):
            token = match[1]
            if match[2] or not token.endswith(("_total", "_bucket", "_count", "_sum")):
                continue
            if not re.search(r"(?<![A-Za-z0-9_])(?:rate|increase)\(\s*$", bare[: match.start()]):
                problems.append(f"{where}: {token} outside rate()/increase()")
    assert not problems, "\n".join(problems)


def test_every_selector_filters_by_job_and_instance() -> None:
    problems = []
    for where, target in targets():
        expr = target["expr"]
        for token in set(metric_tokens(expr)):
            for match in re.finditer(rf"(?<![\w:]){re.escape(token)}(\{{[^}}]*\}})?", expr):
                selector = match[1] or ""
                if 'job=~"$job"' not in selector or 'instance=~"$instance"' not in selector:
                    problems.append(f"{where}: {token}{selector}")
    assert not problems, "\n".join(problems)


def test_every_query_is_about_declared_metrics_and_every_metric_is_charted() -> None:
    declared = declared_series()
    undeclared, bad_labels, bad_legends = [], [], []
    charted = set()
    for where, target in targets():
        expr = target["expr"]
        tokens = metric_tokens(expr)
        assert tokens, f"{where}: no metric in {expr}"
        metrics = set()
        for token in tokens:
            if token in declared:
                metrics.add(declared[token])
            else:
                undeclared.append(f"{where}: {token}")
        charted |= metrics
        allowed = {"job", "instance"}
        for metric in metrics:
            allowed |= {prometheus_label(attribute) for attribute in names.METRICS[metric]}
            if names.METRIC_RECORDS[metric].kind.points == "histogram":
                allowed.add("le")
        labels = label_tokens(expr)
        bad_labels += [f"{where}: {label}" for label in sorted(labels - allowed)]
        legend = set(_LEGEND_LABEL.findall(target["legendFormat"]))
        bad_legends += [f"{where}: {{{{{label}}}}}" for label in sorted(legend - labels)]
    assert not undeclared, "metrics not in names.METRICS:\n" + "\n".join(undeclared)
    assert not bad_labels, "labels outside the metric's attributes:\n" + "\n".join(bad_labels)
    assert not bad_legends, "legend labels the query does not keep:\n" + "\n".join(bad_legends)
    uncharted = sorted(set(names.METRICS) - charted)
    assert not uncharted, f"declared metrics no dashboard charts: {uncharted}"


def test_the_query_parser_finds_metrics_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, http_route) (rate(x_bucket{job=~"$job",'
        'a="rate(y)"}[$__rate_interval]))) or vector(0) / on (b) z'
    )
    assert metric_tokens(expr) == ["x_bucket", "z"]
    assert label_tokens(expr) == {"le", "http_route", "job", "a", "b"}


# --- Provisioning ------------------------------------------------------------------------------
def test_provisioning_files() -> None:
    yaml = pytest.importorskip("yaml")
    datasources = yaml.safe_load((DASHBOARDS / "provisioning/datasources.yaml").read_text())
    by_uid = {source["uid"]: source for source in datasources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["tempo"]["type"] == "tempo"
    assert by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo"}
    ]
    providers = yaml.safe_load((DASHBOARDS / "provisioning/dashboards.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


# --- What the queries compute ------------------------------------------------------------------
def test_cache_entries_count_redis_once_and_the_in_process_tiers_per_instance() -> None:
    """Two instances on one Redis each report its database's 7 keys and 2 evictions a minute:
    the panel reads 7 and 2/60, not twice that; their in-process tiers add up."""
    panel = next(panel for _, panel in panels() if panel["title"] == "Cache entries and evictions")
    entries, evictions = (target["expr"] for target in panel["targets"])
    entries_series, evictions_series = series(names.CACHE_ENTRIES), series(names.CACHE_EVICTIONS)
    problems = []
    for expr, metric, values in (
        (entries, entries_series, {"redis": ("7", "7"), "memory": ("2", "3"), "local": ("1", "4")}),
        (
            evictions,
            evictions_series,
            {"redis": ("0+2x10",) * 2, "memory": ("0+1x10", "0+3x10"), "local": ("0x10", "0x10")},
        ),
    ):
        input_series = {
            f'{metric}{{job="agent",instance="{instance}",toolkit_cache_backend="{backend}"}}': v
            for backend, per_instance in values.items()
            for instance, v in zip(("a:1", "b:1"), per_instance, strict=True)
        }
        expected = (
            {"redis": 7, "memory": 5, "local": 5}
            if metric == entries_series
            else {"redis": 2 / 60, "memory": 4 / 60, "local": 0}
        )
        grafana = expr.replace("$job", ".*").replace("$instance", ".*")
        problems.append(
            promql_test_problems(
                input_series,
                grafana.replace("$__rate_interval", "5m"),
                "5m",
                {f'{{toolkit_cache_backend="{b}"}}': value for b, value in expected.items()},
            )
        )
    assert problems == ["", ""], "\n".join(problems)
