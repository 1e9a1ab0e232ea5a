"""``make demo blocking-backend``: its three phases on real uvicorn processes; the table's
claims hold, and the watchdog's finding is the sqlite call."""

from __future__ import annotations

import pytest

from examples.blocking_backend.demo import Demo, report, rows, run_demo

pytestmark = pytest.mark.slow

DURATION = 2.5
SQLITE_CALLS = ("in load_history", "in save_message")  # the app's two sqlite functions
APP_FILE = "examples/blocking_backend/app.py:"


@pytest.fixture(scope="module")
def demo() -> Demo:
    return run_demo(DURATION)


def test_install_alone_finds_the_blocking_sqlite_call(demo: Demo) -> None:
    """With install() and no other change, the watchdog reports blocked loops, and the call
    that held the loop is the app's own sqlite code, file and line."""
    found = demo.install.code_blocks()
    assert demo.install.blocks > 0
    assert found
    assert any(call.startswith(APP_FILE) and call.endswith(SQLITE_CALLS) for call in found)


def test_offloaded_sqlite_no_longer_blocks_the_loop(demo: Demo) -> None:
    """After @offload, no reported block is the sqlite code, and the loop answers sooner:
    the probe's p95 and worst latency drop. (Blocks may remain: with the queries on threads,
    a busy machine can keep the loop's thread waiting for a CPU, reported as descheduled.)"""
    assert not [call for call in demo.after.blocking_calls() if call.endswith(SQLITE_CALLS)]
    assert len(demo.after.code_blocks()) < len(demo.install.code_blocks())
    assert demo.after.probes.p95 < demo.before.probes.p95
    assert demo.after.probes.max < demo.before.probes.max
    assert demo.after.probes.errors == 0


def test_the_sqlite_calls_ran_on_the_offload_pool(demo: Demo) -> None:
    """Every chat stored two messages and loaded its history there (the toolkit's own count)."""
    offloaded = demo.after.offloaded()
    assert set(offloaded) == {"save_message", "load_history"}
    answered = demo.after.chats.ok
    assert offloaded["load_history"][0] >= answered
    assert offloaded["save_message"][0] >= 2 * answered
    assert demo.install.offloaded() == {}


def test_the_providers_errors_are_absorbed_by_retries(demo: Demo) -> None:
    """Without the toolkit a 503 from the provider fails the chat; with @resilient it is
    tried again: fewer failed chats, and more model calls than chats answered."""
    assert demo.before.chats.error_rate > 0
    assert demo.after.chats.error_rate < demo.before.chats.error_rate
    assert demo.after.model_calls > demo.after.chats.ok
    assert demo.before.model_calls == demo.before.chats.requests  # one try each


def test_the_toolkit_reports_its_own_loop_figures(demo: Demo) -> None:
    for phase in (demo.install, demo.after):
        assert phase.loop["running"] is True
        assert phase.loop["lag"]["count"] > 0


def test_the_report_prints_the_rows_and_the_watchdogs_finding(demo: Demo) -> None:
    text = report(demo)
    for row in rows(demo):
        assert any(line.startswith(row.label) for line in text.splitlines()), row.label
    assert f"install: the watchdog reported {demo.install.blocks} blocked loops" in text
    for call in demo.install.blocking_calls():
        assert f"  {call}  (x" in text
    for cause, count in demo.install.causes().items():
        assert f"{cause} {count}" in text
