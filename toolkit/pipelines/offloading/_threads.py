"""The threads offloaded calls run on: started as needed up to a bound, daemon threads.

Not a ``concurrent.futures.ThreadPoolExecutor``: its threads are joined when the interpreter
exits, so one call stuck in a driver would keep the server process from ever exiting. These
are daemon threads, left behind at exit. Admission (how many run, who waits, the deadline) is
the pool's (``_pool``): a job is handed over only once it has a thread's permit, so a
hand-off never queues behind running work and never finds every thread busy for long.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Final

logger = logging.getLogger("toolkit.pipelines")

THREAD_NAME: Final = "toolkit-offload"
"""The threads' name prefix (``toolkit-offload-3``), as thread dumps and profilers show it."""

Job = Callable[[], None]
"""One call, wrapped: it reports its own outcome and never raises."""


class Threads:
    """Up to ``limit`` daemon threads taking jobs from one queue; idle ones wait on it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    @property
    def started(self) -> int:
        """Threads started and not yet ended."""
        with self._lock:
            return sum(thread.is_alive() for thread in self._threads)

    def run(self, job: Job) -> None:
        """Hand ``job`` to an idle thread, starting one if none is idle and the bound
        allows (the pool's permits make sure it does)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the offload threads are closed")
            if self._idle > 0:
                self._idle -= 1
            else:
                self._threads = [thread for thread in self._threads if thread.is_alive()]
                if len(self._threads) < self._limit:
                    self._start()
        self._jobs.put(job)

    def close(self) -> None:
        """Let every thread end once it is idle (a running job finishes first); no join."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)

    def _start(self) -> None:
        number = len(self._threads) + 1
        thread = threading.Thread(target=self._work, name=f"{THREAD_NAME}-{number}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except BaseException:  # a job reports its own errors; this is a last guard
                logger.exception("an offloaded job failed outside its own guard")
            with self._lock:
                self._idle += 1
