"""Durable mode driven through every decision it reports, for the name-registry test."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from saq import Status
from saq.utils import now

import toolkit
from tests.support.servers import free_port
from tests.support.waiting import eventually
from toolkit.pipelines.deferred._background import set_current_runner
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._runners import deferred_runner, durable_worker
from toolkit.pipelines.deferred.durable._runner import DurableRunner
from toolkit.settings import ToolkitSettings

RAN: list[str] = []


@toolkit.background(name="registry.durable", retries=0)
async def durable_work(token: str) -> None:
    RAN.append(token)


def _settings(url: str, **durable: object) -> ToolkitSettings:
    return ToolkitSettings(
        defer={
            "journal": None,
            "durable": {
                "enabled": True, "url": url, "heartbeat": "1s", "sweep_interval": "1s",
                "handoff_timeout": "200ms", **durable,
            },
        }
    )  # fmt: skip


async def drive_durable(
    redis_url: str, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    """Hand-offs queued, invalid and refused (a Redis that is down); a run lost (its worker
    "died": the job sits active with a stale heartbeat), found by a sweep and run again."""
    RAN.clear()
    settings = _settings(redis_url)
    runner = deferred_runner(
        settings, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    assert isinstance(runner, DurableRunner)
    await runner.start()
    set_current_runner(runner)
    with pytest.raises(toolkit.errors.DurableArgumentError):
        await durable_work.defer(b"not json")  # type: ignore[arg-type]
    await durable_work.defer("lost")
    local = InProcessRunner(
        settings.defer, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    worker = durable_worker(settings, local, meter_provider=meter_provider)
    queue = worker.queue
    job = await queue.dequeue(timeout=1)  # a worker takes it, marks it, and dies
    assert job is not None
    job.status, job.attempts = Status.ACTIVE, 1
    job.started = job.touched = now() - 10_000
    await queue.redis.set(job.id, queue.serialize(job))
    await queue.redis.delete(queue.namespace("sweep"))
    assert await queue.sweep(lock=1) == [job.id]
    worker.start()
    await eventually(lambda: RAN == ["lost"], seconds=10)
    await worker.stop()
    await runner.drain(1)

    down = deferred_runner(
        _settings(f"redis://127.0.0.1:{free_port()}/0"), meter_provider=meter_provider
    )
    await down.start()
    set_current_runner(down)
    started = time.monotonic()
    with pytest.raises(toolkit.errors.DurableUnavailable):
        await durable_work.defer("refused")
    assert time.monotonic() - started < 5
    await down.drain(1)
    set_current_runner(None)
