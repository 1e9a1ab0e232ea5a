"""A real uvicorn process whose async route makes a synchronous sqlite3 write: its log names
the file and line of that write and points at the fix, as a user running it would see it; the
same write offloaded is not reported."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.apps import blocking
from tests.support.servers import UvicornServer, wait_until
from toolkit.telemetry._loop_report import OFFLOAD_HINT

pytestmark = pytest.mark.slow

APP = Path(blocking.__file__).resolve()


def marked_line(marker: str = "# blocks the loop") -> int:
    lines = APP.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text)


def test_the_servers_log_names_the_line_of_a_sync_sqlite_write_in_an_async_route(
    tmp_path: Path,
) -> None:
    output = tmp_path / "server.log"
    env = {"NOTES_DB": str(tmp_path / "notes.db")}
    with UvicornServer("tests.apps.blocking:app", env=env, output=output) as server:
        answer = httpx.post(f"{server.base_url}/notes", timeout=10)
        assert answer.status_code == 200
        expected = f"at {APP}:{marked_line()} in add_note"
        wait_until(lambda: expected in output.read_text(), 10, "the blocked-loop warning")
    (warning,) = [line for line in output.read_text().splitlines() if "event loop blocked" in line]
    assert "cause waiting" in warning  # off the CPU, in the write: not GC, not the machine
    assert "task " in warning
    assert 'in add_note: connection.execute("insert into notes values (pause(?))"' in warning
    assert f"fix: {OFFLOAD_HINT}" in warning


def test_the_same_write_offloaded_keeps_the_loop_free_and_is_not_reported(
    tmp_path: Path,
) -> None:
    output = tmp_path / "server.log"
    env = {"NOTES_DB": str(tmp_path / "notes.db")}
    with UvicornServer("tests.apps.blocking:app", env=env, output=output) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(3):
                assert client.post("/notes/offloaded").status_code == 200
            # the loop turned since: a block of those writes would have been reported by now
            assert client.get("/health").status_code == 200
            assert client.post("/notes").status_code == 200  # one blocking write, as a marker
        expected = f"at {APP}:{marked_line()} in add_note"
        wait_until(lambda: expected in output.read_text(), 10, "the blocked-loop warning")
    warnings = [line for line in output.read_text().splitlines() if "event loop blocked" in line]
    assert len(warnings) == 1, warnings  # the marker's, none for the offloaded writes
    assert f":{marked_line('# on a thread')} " not in output.read_text()
