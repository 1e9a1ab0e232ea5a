"""``promtool check metrics``: Prometheus's own linter of a text exposition."""

from __future__ import annotations

import subprocess

from tests.support.servers import require_binary


def promtool_problems(exposition: bytes) -> str:
    """What ``promtool check metrics`` finds wrong in ``exposition`` ("" when nothing)."""
    checked = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return "" if checked.returncode == 0 else (checked.stdout + checked.stderr).decode()
