"""agent-toolkit: the resolved settings, a doctor that reaches the real backend, breaker
overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.servers import free_port
from toolkit import CircuitBreaker, CircuitOpenError
from toolkit.backends.redis import RedisBackend


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


@pytest.mark.anyio
async def test_breakers_can_be_forced_open_and_reset_fleet_wide_from_the_cli(
    redis_url: str,
) -> None:
    """An operator forces a provider's breaker open: an instance on the same Redis refuses
    its calls; after a reset they go through again."""
    env = {"TOOLKIT_BACKEND__URL": redis_url}
    forced = run("breakers", "force-open", "openai", env=env)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    stored = json.loads(run("breakers", "get", "openai", env=env).stdout)
    assert (stored["name"], stored["forced"]) == ("openai", "open")
    backend = RedisBackend(redis_url, timeout=2)
    try:
        with pytest.raises(CircuitOpenError):
            await CircuitBreaker("openai", backend=backend).call(answer)
        assert run("breakers", "reset", "openai", env=env).returncode == 0
        assert await CircuitBreaker("openai", backend=backend).call(answer) == "ok"
    finally:
        await backend.close()


def test_breakers_command_refuses_the_in_process_backend() -> None:
    result = run("breakers", "force-open", "openai", env={"TOOLKIT_BACKEND__URL": "memory://"})
    assert result.returncode == 2
    assert "TOOLKIT_BACKEND__URL=redis://" in result.stdout


async def answer() -> str:
    return "ok"


@pytest.mark.parametrize(
    "command",
    [("flags", "set", "cache.function", "off"), ("flags", "list"), ("flags", "reset", "pool")],
)
def test_flags_commands_refuse_the_in_process_backend(command: tuple[str, ...]) -> None:
    """With memory:// no running process can see what the command would change or read:
    it says so, points at the setting, and exits non-zero instead of "off for everyone"."""
    result = run(*command, env={"TOOLKIT_BACKEND__URL": "memory://"})
    assert result.returncode == 2, result.stdout
    assert "each process keeps its own flags" in result.stdout
    assert "TOOLKIT_BACKEND__URL=redis://" in result.stdout
    assert "for everyone" not in result.stdout


def test_doctor_warns_that_the_in_process_backend_is_per_process() -> None:
    """memory:// is valid for one process, so the doctor passes, but warns that it is per
    process rather than calling it "reachable"."""
    result = run("doctor", env={"TOOLKIT_BACKEND__URL": "memory://"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: backend memory:// is per process" in result.stdout
    assert "TOOLKIT_BACKEND__URL=redis://" in result.stdout
    assert "reachable" not in result.stdout
