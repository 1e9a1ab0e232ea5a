"""The ``offload`` section: the bounded thread pool of ``@toolkit.offload`` and
``toolkit.run_sync``."""

from __future__ import annotations

from pydantic import Field

from toolkit.settings._section import Section
from toolkit.settings._values import Seconds


class OffloadSettings(Section):
    """How many synchronous calls run off the event loop at once, and how many may wait for a
    thread. ``install()`` makes the pool from these and closes it at shutdown; the
    ``pipelines.offload`` flag sends every call back inline at run time."""

    threads: int = Field(
        16,
        ge=1,
        le=1024,
        description="Threads that run offloaded calls at once (a call still running past its "
        "caller's deadline keeps its thread until it ends). 1 to 1024.",
        examples=["16"],
    )
    max_waiting: int = Field(
        256,
        ge=0,
        le=100000,
        description="Calls that may wait for a thread; one more is refused at once with "
        "PoolExhaustedError (install() answers 503); 0: none waits. 0 to 100000.",
        examples=["256"],
    )
    shutdown_timeout: Seconds = Field(
        5.0,
        ge=0,
        le=300,
        description="How long shutdown waits for calls still running before it leaves their "
        "threads behind (they never keep the process from exiting). 0s to 5m.",
        examples=["5s"],
    )
