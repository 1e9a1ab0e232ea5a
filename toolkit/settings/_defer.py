"""The ``defer`` section: deferred work in process (``toolkit.defer``, ``@toolkit.background``).

The durable mode's options are a sub-section of their own, added by that mode."""

from __future__ import annotations

import os
import tempfile

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Seconds


def _journal_directory() -> str:
    return os.path.join(tempfile.gettempdir(), "agent-toolkit", "deferred")


class DeferSettings(Section):
    """How the in-process runner of deferred work queues, runs, retries and drains tasks;
    ``install()`` starts it with the app and drains it at shutdown. The ``pipelines.defer``
    flag, off, runs the work inline instead (awaited before the hand-off returns)."""

    queue_size: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Tasks accepted and not started yet, at most; past it a hand-off waits "
        "(handoff_timeout) then is refused. 1 to 1000000.",
        examples=["10000"],
    )
    concurrency: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Tasks running at once, at most. 1 to 10000.",
        examples=["10"],
    )
    handoff_timeout: Seconds = Field(
        0.1,
        ge=0,
        le=60,
        description="Longest a hand-off waits for room in a full queue (less if the "
        "request's deadline is sooner) before it is refused; 0 refuses at once. 0s to 1m.",
        examples=["100ms"],
    )
    grace: Seconds = Field(
        10.0,
        ge=0,
        le=3600,
        description="At shutdown, how long the tasks accepted may take to finish; those still "
        "running or queued then are cancelled, counted and logged. 0s to 1h.",
        examples=["10s"],
    )
    retries: int = Field(
        2,
        ge=0,
        le=100,
        description="Retries of a failed task (any exception, with the retry policy's "
        "backoff) unless @background(retries=...) says otherwise. 0 to 100.",
        examples=["2"],
    )
    journal: str | None = Field(
        default_factory=_journal_directory,
        description="Directory of the crash journal: each process keeps its count of tasks "
        "accepted and not finished there, and the next start reports what a crashed one "
        "lost; None keeps none. The system temporary directory's agent-toolkit/deferred by "
        "default.",
        examples=["/var/lib/my-agent/deferred"],
    )
