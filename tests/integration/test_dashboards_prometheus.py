"""Every panel of the bundled dashboards returns data, or an explicit zero, from a real
Prometheus scraping real servers, on each backend: on Redis, one app limiting (200s, 429s,
404s) and one whose Redis is unreachable (backend errors, fail-closed 503s); on the embedded
memory backend, one app alone, where nothing ever fails. The first app's agents call a real
OpenAI-compatible server (tests/support/openai_server.py): through ``toolkit.llm_call`` around
the OpenAI SDK (plain, streamed, embeddings, cached, failing), through the OpenAI SDK plugin's
instrumented client (streamed) and through a pydantic-ai agent on the pydantic-ai plugin's
``ToolkitModel``; one of them blocks the event loop."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import agents
from tests.support.openai_server import OpenAIServer
from tests.support.promtool import promtool_problems
from tests.support.servers import UvicornServer, free_port, require_binary, wait_until
from toolkit.backends.redis import RedisBackend
from toolkit.flags import RATELIMIT, FlagStore
from toolkit.telemetry import names
from toolkit.telemetry.dashboards import build_dashboards, series

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

JOB = "agent"
ADMIN_TOKEN = "dashboard-test-admin-token-0123456789"
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$job": ".*",
    "$instance": ".*",
}


class PrometheusServer:
    """``prometheus`` on a free loopback port, scraping ``targets`` every second as job
    ``agent``, with its storage in ``directory``."""

    def __init__(self, binary: str, directory: Path, targets: list[str]) -> None:
        self.binary = binary
        self.directory = directory
        self.targets = targets
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": self.targets}]}],
        }
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        self.log = self.directory / "prometheus.log"
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, 20, f"prometheus ready on {self.url}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._process = None

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def scrapes(self) -> int:
        """Scrapes of the target scraped least so far (0 until every target was scraped)."""
        counts = self.query(f'count_over_time(up{{job="{JOB}"}}[10m])')
        if len(counts) < len(self.targets):
            return 0
        return min(int(float(sample["value"][1])) for sample in counts)

    def wait_for_scrapes(self, n: int) -> None:
        """Until every target was scraped ``n`` more times, so at least ``n - 1`` complete
        scrapes started after this call."""
        target = self.scrapes() + n
        wait_until(lambda: self.scrapes() >= target, 15, f"{n} scrapes of every target")


@pytest.fixture
def prometheus_binary() -> str:
    """Debian's prometheus (``make test`` installs it); checked before any server starts."""
    return require_binary("prometheus")


@pytest.fixture
def model_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


PRICES = {
    "gpt-4o": {"input": 2.5, "output": 10},
    "text-embedding-3-small": {"input": 0.02, "output": 0},
}


@pytest.fixture(params=["redis", "memory"])
def servers(
    request: pytest.FixtureRequest, model_server: OpenAIServer
) -> Iterator[tuple[UvicornServer, UvicornServer | None]]:
    """An app limiting /limited to 3 a minute on the backend, its agents calling the model
    server; on Redis, also one whose Redis is unreachable, with /closed failing closed."""
    limited = {
        "OPENAI_BASE_URL": model_server.base_url,
        "TOOLKIT_AGENTS__PRICES": json.dumps(PRICES),
        "TOOLKIT_ADMIN__TOKENS": json.dumps({"ops": ADMIN_TOKEN}),
        "TOOLKIT_RATELIMIT__ROUTES": json.dumps({"/limited": "3/minute"}),
        # A "model" breaker that opens after 4 failed calls in 5: transitions and rejections.
        "TOOLKIT_RESILIENCE__MINIMUM_CALLS": "4",
        "TOOLKIT_RESILIENCE__FAILURE_RATE": "0.5",
    }
    if request.param == "memory":
        limited["TOOLKIT_BACKEND__URL"] = "memory://"
        with UvicornServer("tests.apps.agent:app", env=limited) as app:
            yield app, None
        return
    limited["TOOLKIT_BACKEND__URL"] = request.getfixturevalue("redis_url")
    degraded = {
        "TOOLKIT_BACKEND__URL": f"redis://127.0.0.1:{free_port()}/0",
        "TOOLKIT_RATELIMIT__ROUTES": json.dumps(
            {"/open": "1000/minute", "/closed": {"limit": "1000/minute", "failure": "closed"}}
        ),
    }
    with (
        UvicornServer("tests.apps.agent:app", env=limited) as app,
        UvicornServer("tests.apps.agent:app", env=degraded) as down,
    ):
        yield app, down


def drive(
    app: UvicornServer, down: UvicornServer | None, model_server: OpenAIServer
) -> dict[int, int]:
    """200s, 429s, 404s, cache decisions and agents on the first app; fail-open 200s and
    fail-closed 503s (backend errors) on the second, if any. Returns how many of each status."""
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=5) as client:
        for path in agents.PATHS:
            agents.script_failures(model_server, path)
            response = client.get(app.base_url + path)
            assert response.status_code == (502 if "/fail/" in path else 200), response.text
        for base, paths in (
            (
                app.base_url,
                ["/limited"] * 5
                + ["/open"] * 3
                + ["/missing"] * 2
                + ["/sse"]
                # cache misses and hits, and local copies evicting each other
                + ["/answers/1", "/answers/2"] * 2
                # a fan-out (ok, fallback, timeout); a request past its deadline (504)
                + ["/fanout", "/deadline"]
                # pool: lent and given back, a full queue, a timeout, a discard
                # the model breaker: successes, failures, opened, calls refused
                + ["/model/ok", "/model/fail", "/model/fail", "/model/fail", "/model/ok"]
                # deferred work: a task done, one retried and failed
                + ["/deferred/ok", "/deferred/fail"]
                # last: the app's 500 makes uvicorn close the connection
                + ["/offloaded"] * 2  # sqlite writes on the offload pool
                + ["/pooled/ok", "/pooled/full", "/pooled/timeout", "/pooled/error"],
            ),
            *([(down.base_url, ["/open"] * 3 + ["/closed"] * 3)] if down else []),
        ):
            for path in paths:
                budget = {"request-timeout": "0.05"} if path == "/deadline" else {}
                status = client.get(base + path, headers=budget).status_code
                statuses[status] = statuses.get(status, 0) + 1
    return statuses


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not substitute: {expr}"
    return expr


def value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def flip(app: UvicornServer, backend_url: str) -> None:
    """An operator's change: the rate limiter explicitly on (nothing changes but the flag),
    through the backend (Redis), or through the app's admin API (memory: one process)."""
    if backend_url == "memory://":
        response = httpx.put(
            f"{app.base_url}/_toolkit/flags/{RATELIMIT}",
            json={"variant": "on"},
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        return

    async def change() -> None:
        backend = RedisBackend(backend_url, timeout=2)
        await FlagStore(backend).set(RATELIMIT, "on", by="dashboard-test")
        await backend.close()

    asyncio.run(change())


def test_every_panel_returns_data_from_a_real_prometheus(
    prometheus_binary: str,
    servers: tuple[UvicornServer, UvicornServer | None],
    model_server: OpenAIServer,
    tmp_path: Path,
) -> None:
    app, down = servers
    backend_url = app.env["TOOLKIT_BACKEND__URL"]
    targets = [server.base_url.removeprefix("http://") for server in (app, down) if server]
    with PrometheusServer(prometheus_binary, tmp_path, targets) as prometheus:
        first = drive(app, down, model_server)
        flip(app, backend_url)
        prometheus.wait_for_scrapes(2)
        second = drive(app, down, model_server)  # after a scrape: every rate() sees an increase
        prometheus.wait_for_scrapes(2)
        for server in (app, down):  # what Prometheus scrapes passes its own linter
            if server is not None:
                exposition = httpx.get(f"{server.base_url}/metrics", timeout=5).content
                assert promtool_problems(exposition) == "", server.base_url
        expected = {200, 404, 429, 503, 504} if down else {200, 404, 429, 504}
        assert expected <= set(first) & set(second), (first, second)

        up = prometheus.query(f'up{{job="{JOB}"}}')
        assert [value(sample) for sample in up] == [1.0] * len(targets), prometheus.api("targets")

        # The template variables' label_values() queries.
        count = series(names.HTTP_SERVER_REQUEST_DURATION, "_count")
        assert prometheus.api("label/job/values", **{"match[]": count}) == [JOB]
        instances = prometheus.api("label/instance/values", **{"match[]": f'{count}{{job=~".*"}}'})
        assert sorted(instances) == sorted(targets)

        results: dict[tuple[str, str], list[dict[str, Any]]] = {}  # by panel title and refId
        empty, no_number = [], []
        for file_name, dashboard in build_dashboards().items():
            for panel in dashboard["panels"]:
                if panel["type"] == "table":  # Tempo's: tests/plugins/test_dashboard_traces.py
                    continue
                for target in panel.get("targets", []):
                    where = f"{file_name}: {panel['title']} [{target['refId']}]"
                    expr = grafana_expr(target["expr"])
                    result = results[panel["title"], target["refId"]] = prometheus.query(expr)
                    if not result:
                        empty.append(f"{where}: {expr}")
                    elif not any(math.isfinite(value(sample)) for sample in result):
                        no_number.append(f"{where}: {result}")
        assert not empty, f"panels with no data on {backend_url}:\n" + "\n".join(empty)
        assert not no_number, "panels with only NaN/Inf:\n" + "\n".join(no_number)

    def panel(title: str, ref: str = "A") -> list[dict[str, Any]]:
        """A panel's results, whichever dashboard holds it (titles are unique across them)."""
        return results[title, ref]

    # The numbers say what happened.
    assert value(panel("Request rate")[0]) > 0
    app_instance = app.base_url.removeprefix("http://")
    if down is None:  # memory: the backend never failed, and the panel says 0, not nothing
        errors = [value(s) for s in panel("Backend errors by operation and error type")]
        assert errors == [0.0], errors
    else:
        assert value(panel("Error ratio")[0]) > 0  # the fail-closed 503s
        errors_by_operation = {
            s["metric"].get("toolkit_backend_operation"): value(s)
            for s in panel("Backend errors by operation and error type")
        }
        assert errors_by_operation.get("ratelimit.gcra", 0) > 0, errors_by_operation
        stale = {
            s["metric"]["instance"]: value(s) for s in panel("Stale or failed flag evaluations")
        }
        assert stale[down.base_url.removeprefix("http://")] > 0  # its Redis is unreachable
        assert stale[app_instance] == 0
        decisions = {
            (s["metric"]["toolkit_rate_limit_policy"], s["metric"]["toolkit_rate_limit_result"])
            for s in panel("Rate-limit decisions by policy and result")
        }
        assert ("/closed", "error") in decisions
    rejected = {
        s["metric"]["toolkit_rate_limit_policy"]: value(s)
        for s in panel("Rejection ratio by policy")
    }
    assert rejected["/limited"] > 0
    assert rejected.get("/open", 0) == 0
    decisions = {
        (s["metric"]["toolkit_rate_limit_policy"], s["metric"]["toolkit_rate_limit_result"])
        for s in panel("Rate-limit decisions by policy and result")
    }
    assert {("/limited", "allowed"), ("/limited", "rejected")} <= decisions
    served = {
        (s["metric"]["feature_flag_key"], s["metric"]["feature_flag_result_variant"])
        for s in panel("Flag evaluations by flag and variant")
    }
    assert (RATELIMIT, "on") in served
    changes = {s["metric"]["instance"] for s in panel("Flag changes applied, by instance")}
    assert app_instance in changes
    routes = {s["metric"]["http_route"] for s in panel("Requests by route")}
    assert {"/limited", "/open", "/sse", "/answers/{answer_id}", names.UNMATCHED_ROUTE} <= routes
    outcomes = {
        s["metric"]["toolkit_circuit_breaker_outcome"]
        for s in panel("Calls through breakers by outcome")
    }
    assert {"success", "failure", "rejected"} <= outcomes, outcomes
    ratio = {s["metric"]["toolkit_cache_name"]: value(s) for s in panel("Cache hit ratio by cache")}
    assert ratio["response"] > 0, ratio  # the second round of answers came from the cache
    held = {s["metric"].get("toolkit_cache_backend") for s in panel("Cache entries and evictions")}
    assert backend_url.partition(":")[0] in held, held  # the backend's own series, either one

    # The agents dashboard: both paths, the failures by type, what the cache saved.
    calls = {
        (s["metric"]["gen_ai_operation_name"], s["metric"]["gen_ai_request_model"])
        for s in panel("Model calls by operation and model")
    }
    assert {("chat", agents.CHAT_MODEL), ("embeddings", agents.EMBEDDING_MODEL)} <= calls
    failures = {
        s["metric"]["error_type"] for s in panel("Model call errors by model and error type")
    }
    assert {"503", "timeout", "connection"} <= failures, failures
    assert value(panel("Model call error ratio")[0]) > 0
    assert any(value(s) > 0 for s in panel("Time to first chunk by model (p50, p95, p99)"))
    branches = {
        (s["metric"]["toolkit_fanout_branch"], s["metric"]["toolkit_fanout_outcome"])
        for s in panel("Fan-out branches by outcome")
    }
    assert {("vector", "ok"), ("graph", "fallback"), ("docs", "timeout")} <= branches
    past_deadline = {
        s["metric"]["toolkit_deadline_source"]: value(s)
        for s in panel("Requests past their deadline (504)")
    }
    assert past_deadline["header"] > 0, past_deadline
    spending = {
        (s["metric"].get("gen_ai_agent_name"), s["metric"]["gen_ai_request_model"])
        for s in panel("Tokens per second by agent, model and type")
    }
    # writer and support through llm_call and the SDK; summarizer through the OpenAI SDK
    # plugin; planner through pydantic-ai's
    # (support's chat is a cache hit after the first: its rate may be 0, its series is there)
    assert {
        ("support", "gpt-4o"),
        ("writer", "gpt-4o"),
        ("summarizer", "gpt-4o"),
        ("planner", "gpt-4o"),
    } <= spending
    cost = {
        s["metric"]["gen_ai_agent_name"]: value(s)
        for s in panel("Cost per hour by agent and model")
    }
    assert {"support", "writer", "summarizer", "planner"} <= set(cost), cost
    assert sum(cost.values()) > 0, cost
    assert value(panel("Model cost over the time range")[0]) > 0
    spared = {
        s["metric"]["toolkit_cache_name"]: value(s) for s in panel("Model calls spared by caches")
    }
    assert spared.get("model-answers", 0) > 0, spared
    runs = {s["metric"]["gen_ai_agent_name"] for s in panel("Agent runs by agent and error type")}
    assert {"support", "writer", "summarizer", "archivist"} <= runs
    steps = {s["metric"]["toolkit_step_name"] for s in panel("Step duration by step (p50, p95)")}
    assert {"memory.recall", "search", "sqlite.write"} <= steps
    blocked = [value(s) for s in panel("Blocked-loop events by cause")]
    assert max(blocked) > 0, blocked  # the archivist's synchronous write
