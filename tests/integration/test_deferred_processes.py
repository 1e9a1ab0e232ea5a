"""Deferred work in a real uvicorn process: a clean shutdown (SIGTERM) runs every task it
accepted; a crash (SIGKILL) loses what was pending, and the next start says how much."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.support.servers import UvicornServer, wait_until

pytestmark = pytest.mark.slow


def test_a_clean_shutdown_runs_every_deferred_task_it_accepted(tmp_path: Path) -> None:
    """200 tasks deferred just before SIGTERM: every one has run when the process exits."""
    output = tmp_path / "lines.txt"
    output.touch()
    env = {"DEFERRED_OUTPUT": str(output), "TOOLKIT_DEFER__JOURNAL": str(tmp_path / "journal")}
    with UvicornServer("tests.apps.deferred:app", env=env) as server:
        answer = httpx.post(f"{server.base_url}/write/200", timeout=10)
        assert answer.json() == {"deferred": 200}
        assert len(output.read_text().splitlines()) < 200  # 10 at a time, 50 ms each: 1 s in all
    lines = output.read_text().splitlines()
    assert sorted(int(line) for line in lines) == list(range(200))
    assert not list((tmp_path / "journal").glob("*.json"))  # a clean drain leaves no journal


def test_a_crash_with_tasks_pending_is_counted_and_logged_at_the_next_start(
    tmp_path: Path,
) -> None:
    """SIGKILL with 7 tasks accepted and not finished: the next process of the service logs
    that 7 tasks of ``crash.stuck`` were lost and counts them in toolkit.deferred.lost."""
    journal = tmp_path / "journal"
    env = {"TOOLKIT_DEFER__JOURNAL": str(journal), "TOOLKIT_TELEMETRY__SERVICE_NAME": "crashy"}
    crashed = UvicornServer("tests.apps.deferred:app", env=env)
    with crashed:
        assert httpx.post(f"{crashed.base_url}/stuck/7", timeout=10).status_code == 200

        def journal_says_seven() -> bool:
            files = list(journal.glob("crashy.*.json"))
            return len(files) == 1 and json.loads(files[0].read_text())["pending"] == {
                "crash.stuck": 7
            }

        wait_until(journal_says_seven, 10, "the journal counting 7 pending tasks")
        crashed.kill()
    log = tmp_path / "restarted.log"
    with UvicornServer("tests.apps.deferred:app", env=env, output=log) as restarted:
        metrics = httpx.get(f"{restarted.base_url}/metrics", timeout=10).text
    assert re.search(
        r'^toolkit_deferred_lost_total\{[^}]*toolkit_task_name="crash\.stuck"[^}]*\} 7\.0$',
        metrics,
        re.MULTILINE,
    ), metrics
    assert "7 tasks accepted by a process that crashed" in log.read_text()
    assert "crash.stuck: 7" in log.read_text()
    assert not list(journal.glob("crashy.*")), "the claimed journal is removed"
