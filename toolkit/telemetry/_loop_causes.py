"""What explains a blocked loop: garbage collection, the process not being scheduled, code
running on the loop thread, or the loop thread waiting in a blocking call.

Three measurements, each over the block's time span:

* GC pauses, timed by ``gc.callbacks`` (a collection holds the GIL: every thread waits);
* the watchdog thread's own stalls: wake-ups that came late, which happen when the whole
  process is not running (the machine is overloaded, a CPU quota throttles it, it was paused);
* the loop thread's CPU time against the wall time: near the wall time, code was running;
  far below it, the thread was off the CPU (a sleep, a lock, disk or network I/O) or waiting
  for one, which Linux tells apart (``/proc/thread-self/schedstat``: time on a CPU, time
  runnable but waiting for one).
"""

from __future__ import annotations

import gc
import os
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from toolkit.telemetry import names

Interval = tuple[float, float]
"""(start, end) in ``time.monotonic()`` seconds."""

_KEPT: Final = 64
"""Intervals remembered: more than a block can hold of the ones that matter."""
MIN_GC_PAUSE: Final = 0.001
"""Collections shorter than this are not remembered: they explain no block."""


def overlap(intervals: Iterable[Interval], start: float, end: float) -> float:
    """Seconds of ``intervals`` inside ``[start, end]``."""
    return sum(max(0.0, min(end, stop) - max(start, begin)) for begin, stop in list(intervals))


class GcPauses:
    """The process's garbage collections of at least :data:`MIN_GC_PAUSE`, the last
    :data:`_KEPT`, timed from ``gc.callbacks`` between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.pauses: deque[Interval] = deque(maxlen=_KEPT)
        self._started = 0.0

    def start(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        del info
        now = time.monotonic()
        if phase == "start":
            self._started = now
        elif self._started and now - self._started >= MIN_GC_PAUSE:
            self.pauses.append((self._started, now))


class Stalls:
    """Where a thread that meant to wake up could not: each wake-up later than planned by
    more than ``slack`` seconds, the last :data:`_KEPT`."""

    def __init__(self, slack: float) -> None:
        self.stalls: deque[Interval] = deque(maxlen=_KEPT)
        self._slack = slack

    def woke(self, planned: float, now: float) -> None:
        if now - planned > self._slack:
            self.stalls.append((planned, now))


class ThreadClock:
    """The CPU time of the thread that made it, and the time it was runnable but waited for a
    CPU, in seconds; readable from any thread. Where Linux's per-thread schedstat is missing,
    the CPU time alone (``time.thread_time()``, so: read on that thread) and no wait."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> tuple[float, float]:
        if self._fd is not None:
            try:
                on_cpu, waiting, _ = os.pread(self._fd, 64, 0).split()
                return int(on_cpu) / 1e9, int(waiting) / 1e9
            except (OSError, ValueError):
                pass
        return time.thread_time(), 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def cause_of(*, duration: float, gc_time: float, cpu: float, descheduled: float) -> str:
    """The cause that explains a block (:data:`names.EVENT_LOOP_BLOCKED_CAUSES`): GC if it
    took half of it; code if the loop thread ran for half the time it could have run (a
    computation on a crowded machine is still the computation) and for a tenth of the block
    at least (a thread stopped throughout could run for none of it, and ran no code); else
    descheduled if the process could not run for half of it; else a blocking call."""
    if gc_time >= duration / 2:
        return names.EVENT_LOOP_GC
    if cpu >= (duration - descheduled) / 2 and cpu >= duration / 10:
        return names.EVENT_LOOP_CODE
    if descheduled >= duration / 2:
        return names.EVENT_LOOP_DESCHEDULED
    return names.EVENT_LOOP_WAITING
