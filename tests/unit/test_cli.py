"""agent-toolkit: the resolved settings, and a doctor that reaches the real backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.servers import free_port


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_settings_prints_the_resolved_settings_without_credentials() -> None:
    result = run(
        "settings",
        env={
            "TOOLKIT_BACKEND__URL": "redis://user:s3cret@cache:6379/0",
            "TOOLKIT_RATELIMIT__LIMIT": "9/second",
        },
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["ratelimit"]["limit"] == "9/second"
    assert settings["backend"]["url"] == "redis://***@cache:6379/0"
    assert "s3cret" not in result.stdout


def test_doctor_reaches_redis_and_reports_when_it_cannot(redis_url: str) -> None:
    up = run("doctor", env={"TOOLKIT_BACKEND__URL": redis_url})
    assert up.returncode == 0, up.stderr
    assert "reachable" in up.stdout
    down = run("doctor", env={"TOOLKIT_BACKEND__URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == 1
    assert "unreachable (connection)" in down.stdout


def test_invalid_settings_exit_1_naming_the_setting() -> None:
    result = run("doctor", env={"TOOLKIT_RATELIMIT__LIMIT": "lots"})
    assert result.returncode == 1
    assert "TOOLKIT_RATELIMIT__LIMIT" in result.stderr
