"""The ``defer.durable`` section: deferred work kept in Redis and run by worker processes
(:mod:`toolkit.pipelines.deferred.durable._runner`), shared by every instance and surviving a
crash."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from toolkit.settings._section import Section
from toolkit.settings._values import BackendUrl, Seconds

OnUnavailable = Literal["refuse", "in_process"]
"""What a hand-off does when Redis cannot take the task: raise, or run it in this process."""

QueueName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")]


class DurableSettings(Section):
    """Durable mode of deferred work: ``defer()`` hands the task to a queue in Redis and a
    worker process (``agent-toolkit worker APP_MODULE``, or one inside each app process) runs
    it; a worker that dies mid-task loses nothing: the task runs again elsewhere (at least
    once). Off, deferred work runs in the process that deferred it."""

    enabled: bool = Field(
        False,
        description="Hand deferred work to the Redis queue instead of running it in process.",
    )
    url: BackendUrl | None = Field(
        None,
        description="The Redis of the queue (redis:// or rediss://); unset: backend.url, "
        "which must then be a Redis.",
        examples=["redis://localhost:6379/1"],
    )
    queue: QueueName = Field(
        "toolkit-deferred",
        description="Name of the queue: the app and its workers must use the same. Letters, "
        "digits and ._:- , at most 100 characters.",
        examples=["memory-writes"],
    )
    handoff_timeout: Seconds = Field(
        1.0,
        ge=0.01,
        le=30,
        description="Longest a hand-off waits for Redis to take the task (the request's "
        "deadline, if sooner, wins). 10ms to 30s.",
        examples=["500ms"],
    )
    on_unavailable: OnUnavailable = Field(
        "refuse",
        description="When Redis cannot take a task: 'refuse' raises DurableUnavailable to the "
        "caller (nothing is silently lost); 'in_process' runs it in this process instead "
        "(lost if the process crashes).",
        examples=["in_process"],
    )
    max_payload_bytes: int = Field(
        65536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest task (its arguments as JSON) a hand-off accepts; pass an id and "
        "load the rest in the task. 1024 to 16777216.",
        examples=["65536"],
    )
    heartbeat: Seconds = Field(
        10.0,
        ge=1,
        le=3600,
        description="A running task not heard from for this long (its worker died or froze) "
        "is run again by another worker. Its worker touches it every third of this. 1s to 1h.",
        examples=["30s"],
    )
    sweep_interval: Seconds = Field(
        5.0,
        ge=1,
        le=600,
        description="How often the workers look for lost tasks (one of them each time, "
        "fleet-wide). A lost task runs again within heartbeat + sweep_interval. 1s to 10m.",
        examples=["10s"],
    )
    timeout: Seconds = Field(
        600.0,
        ge=1,
        le=86400,
        description="Longest one run of a task may take before it is cancelled. 1s to 1d.",
        examples=["5m"],
    )
    redeliveries: int = Field(
        3,
        ge=0,
        le=100,
        description="Times a task whose run was lost (its worker died) is run again before it "
        "is given up. Retries after an exception are the task's own (retries=). 0 to 100.",
        examples=["3"],
    )
    concurrency: int = Field(
        10,
        ge=1,
        le=1000,
        description="Tasks one worker runs at once. 1 to 1000.",
        examples=["10"],
    )
    workers_in_app: bool = Field(
        False,
        description="Also run a worker inside each app process (started and drained with the "
        "app), for a fleet without worker processes of its own.",
    )
    keep: Seconds = Field(
        600.0,
        ge=1,
        le=7 * 86400,
        description="How long Redis keeps a finished task's record (its outcome, for "
        "inspection). 1s to 7d.",
        examples=["1h"],
    )

    @model_validator(mode="after")
    def _single_node(self) -> DurableSettings:
        if self.url is not None and not self.url.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"defer.durable.url {self.url!r}: the queue needs one Redis (redis:// or "
                "rediss://, e.g. 'redis://localhost:6379/1'), not a cluster or memory://"
            )
        return self
