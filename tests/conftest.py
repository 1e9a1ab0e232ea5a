"""Session-wide real servers and a clean OpenTelemetry slate for every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import toolkit
import toolkit.agents
import toolkit.cache
import toolkit.resilience
from tests.support.servers import RedisServer, require_binary
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.pipelines.fanout._telemetry import set_current_fanout_telemetry
from toolkit.pipelines.offloading._decorator import set_current_offload_pool

PROCESS_TESTS = ("tests/integration/", "tests/examples/", "tests/browser/")
"""Where the tests start fleets of server processes, a browser, or time a demo's phases."""
ALONGSIDE = frozenset(
    f"tests/integration/{name}.py"
    for name in (
        "test_deferred_processes",
        "test_durable_processes",
        "test_profile_invalidation_processes",
        "test_redis_cluster",
        "test_root_path",
        "test_status_top",
        "test_streaming",
    )
)
"""The modules of :data:`PROCESS_TESTS` that start a server or two and time nothing tighter
than seconds: they may run beside a fleet."""
PROCESSES = "processes"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test`` runs the suite on two pytest-xdist workers, ``--dist loadgroup``: the
    modules of :data:`PROCESS_TESTS`, less :data:`ALONGSIDE`, are one group, run in turn on
    one worker, so that no two fleets contend for the machine's two cores and the latencies
    they compare; every other module is a group of its own (its fixtures set up once), run on
    either worker. The groups are made here from the paths: xdist 3.8 marks a test's
    ``xdist_group`` by renaming its node id through an attribute pytest 9.2 no longer reads
    (pytest-xdist issue 1386), so that marks group nothing."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ProcessesInTurn(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.partition("::")[0]
            in_turn = module.startswith(PROCESS_TESTS) and module not in ALONGSIDE
            return PROCESSES if in_turn else module

        def _assign_work_unit(self, node: Any) -> None:
            # The longest group first, whatever the order of the rest: the other worker
            # gets through the modules meanwhile.
            if PROCESSES in self.workqueue:
                self.workqueue.move_to_end(PROCESSES, last=False)
            super()._assign_work_unit(node)

    return ProcessesInTurn(config, log)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (modules marked ``pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, on a free port."""
    server = RedisServer(require_binary("redis-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and empty."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider
    provider.shutdown()


@pytest.fixture(autouse=True)
def _reset_global_providers() -> Iterator[None]:
    """Tests that set global providers (as an app would), or install the toolkit (which makes
    its flag store, cache and breakers the current ones), must not leak them to the next."""
    yield
    toolkit.flags._current.INSTALLED.set(None)
    toolkit.cache.set_current_cache(None)
    toolkit.resilience.set_current_breakers(None)
    toolkit.agents.set_current_agent_telemetry(None)
    set_current_fanout_telemetry(None)
    toolkit.pipelines.deferred._background.set_current_runner(None)
    set_current_offload_pool(None)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None
    # Instruments made through the proxy (before any provider was set) would attach to the
    # next test's global provider and take its instruments' names first.
    metrics._internal._PROXY_METER_PROVIDER = metrics._internal._ProxyMeterProvider()


@pytest.fixture(params=["memory", "redis"])
async def backend(
    request: pytest.FixtureRequest, meter_provider: MeterProvider
) -> AsyncIterator[Backend]:
    """The same test body on the embedded and the Redis backend, each under a fresh prefix."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    store: Backend
    if request.param == "memory":
        store = MemoryBackend(key_prefix=prefix, meter_provider=meter_provider)
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisBackend(url, timeout=2, key_prefix=prefix, meter_provider=meter_provider)
    await store.connect()
    yield store
    await store.close()
