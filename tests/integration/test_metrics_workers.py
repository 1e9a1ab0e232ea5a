"""/metrics of a four-worker server, uvicorn's and gunicorn's: one scrape of the one port
reports every worker's series, through a worker killed, a worker stopped, and shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promtool import promtool_problems
from tests.support.servers import GunicornServer, UvicornServer
from tests.support.traffic import burst

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SERVERS = [UvicornServer, GunicornServer]
TIMEOUT = 0.3
"""Seconds a scrape waits for the other workers (TOOLKIT_TELEMETRY__MERGE_TIMEOUT)."""


@pytest.fixture
def directory() -> Iterator[Path]:
    """Where the workers' shared directory is made: short, as unix socket paths must be."""
    path = Path(tempfile.mkdtemp(prefix="tkm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _server(kind: type[UvicornServer], directory: Path) -> UvicornServer:
    env = {
        "TOOLKIT_TELEMETRY__MERGE_DIRECTORY": str(directory),
        "TOOLKIT_TELEMETRY__MERGE_TIMEOUT": f"{TIMEOUT}s",
    }
    return kind("tests.apps.agent:app", env=env, workers=4)


def _scrape(server: UvicornServer) -> bytes:
    response = httpx.get(server.base_url + "/metrics", timeout=10)
    assert response.status_code == 200
    return response.content


def _requests(exposition: bytes, route: str = "/limited") -> float:
    """``http_server_request_duration_seconds_count`` summed over the series of ``route``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
        and sample.labels.get("http_route") == route
    )


def _pids(exposition: bytes) -> set[str]:
    """The workers that reported ``process_start_time_seconds`` (a gauge of one process)."""
    return {
        sample.labels["process_pid"]
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
        if sample.name == "process_start_time_seconds"
    }


def _drive(server: UvicornServer, count: int) -> set[int]:
    """``count`` requests to /limited, each on a connection of its own; the workers that
    answered them."""
    responses = asyncio.run(burst([server.base_url + "/limited"] * count))
    assert all(response.status_code == 200 for response in responses)
    return {response.json()["worker"] for response in responses}


@pytest.mark.parametrize("kind", SERVERS, ids=["uvicorn", "gunicorn"])
def test_metrics_of_four_workers_count_every_request(
    kind: type[UvicornServer], directory: Path
) -> None:
    """1,000 requests spread over four workers: every scrape, whichever worker answers it,
    reads 1,000 and one start time per worker, and promtool finds nothing wrong; after
    shutdown the workers' sockets and files are gone."""
    with _server(kind, directory) as server:
        workers = _drive(server, 1000)
        assert len(workers) == 4, workers
        for _ in range(8):  # each scrape lands on a random worker
            exposition = _scrape(server)
            assert _requests(exposition) == 1000
            assert _pids(exposition) == {str(pid) for pid in workers}
        assert promtool_problems(exposition) == ""
        (shared,) = directory.iterdir()
        assert len(list(shared.glob("*.sock"))) == 4
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("kind", SERVERS, ids=["uvicorn", "gunicorn"])
def test_metrics_keep_the_counts_of_a_killed_worker(
    kind: type[UvicornServer], directory: Path
) -> None:
    """A worker killed after a scrape saw its requests: once the server replaced it, the
    counter still reads what it read (no drop that rate() would take for a reset), and goes
    on from there."""
    with _server(kind, directory) as server:
        workers = _drive(server, 1000)
        assert _requests(_scrape(server)) == 1000
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert victim not in server.worker_pids()  # four answer again: it was replaced
        for _ in range(8):
            exposition = _scrape(server)
            assert _requests(exposition) == 1000
            assert str(victim) not in _pids(exposition)
        (shared,) = directory.iterdir()
        assert not list(shared.glob(f"{victim}-*"))  # retired: its files removed
        _drive(server, 200)
        assert _requests(_scrape(server)) == 1200


@pytest.mark.parametrize("kind", SERVERS, ids=["uvicorn", "gunicorn"])
def test_metrics_do_not_wait_for_a_stopped_worker(
    kind: type[UvicornServer], directory: Path
) -> None:
    """A worker stopped (SIGSTOP) holds a scrape no longer than the merge timeout, and its
    series are served from its last answer meanwhile: still 1,000."""
    with _server(kind, directory) as server:
        workers = _drive(server, 1000)
        assert _requests(_scrape(server)) == 1000
        frozen = min(workers)
        os.kill(frozen, signal.SIGSTOP)
        try:
            for _ in range(4):
                started = time.monotonic()
                exposition = _scrape(server)
                assert time.monotonic() - started < TIMEOUT + 1.5
                assert _requests(exposition) == 1000
                assert str(frozen) in _pids(exposition)
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert _requests(_scrape(server)) == 1000


def test_metrics_of_workers_kept_apart_say_so_at_startup(directory: Path, tmp_path: Path) -> None:
    """merge_workers=off under uvicorn --workers: each worker warns that a scrape reaches one
    of them at random, and a scrape indeed reports one worker (no per-worker series)."""
    log = tmp_path / "stderr"
    env = {"TOOLKIT_TELEMETRY__MERGE_WORKERS": "off"}
    with UvicornServer("tests.apps.agent:app", env=env, workers=2, output=log) as server:
        _drive(server, 20)
        exposition = _scrape(server)
        assert _requests(exposition) <= 20
        assert "process_pid" not in exposition.decode()
    warning = "/metrics serves one uvicorn --workers worker at random per scrape"
    assert log.read_text().count(warning) == 2
