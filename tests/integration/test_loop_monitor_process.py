"""A real uvicorn process whose async route makes a synchronous sqlite3 write: its log names
the file and line of that write, as a user running it would see it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.apps import blocking
from tests.support.servers import UvicornServer, wait_until

pytestmark = pytest.mark.slow

APP = Path(blocking.__file__).resolve()


def marked_line() -> int:
    lines = APP.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if "# blocks the loop" in text)


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
