"""The watchdog thread: notices a loop that has not turned, samples its stack, and reports the
block once the loop turns again.

The probe (on the loop) publishes a :class:`Beat` each time it runs, and with it moves the
watchdog's alarm (``_loop_alarm``) to the threshold past the next beat's due time; a late run
queues the pair of beats around it and rings the alarm instead. So this thread sleeps while
the loop is healthy, however busy, and wakes when a beat is overdue by the blocked threshold:
the loop is blocked, and it samples the loop thread's stack and the running task, then looks
again every few milliseconds (each look late by more than a GIL switch is a stall) until the
loop turns. Each queued pair becomes a report, its causes measured over the block
(``_loop_causes``). Nothing here runs on the loop but :meth:`Watchdog.publish`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from toolkit.telemetry._loop_alarm import new_alarm
from toolkit.telemetry._loop_causes import GcPauses, Stalls, cause_of, overlap
from toolkit.telemetry._loop_report import BlockedLoop
from toolkit.telemetry._loop_stack import Sampled, kept_frames, running_task, sample_stack

logger = logging.getLogger("toolkit.telemetry.loop")

JOIN_TIMEOUT: Final = 2.0
"""Seconds :meth:`Watchdog.stop` waits for the thread; it wakes at once, so this is a bound."""


@dataclass(frozen=True, slots=True)
class Beat:
    """One run of the probe: its number, when it ran, when the next is due (monotonic
    seconds), and the loop thread's CPU time and wait for a CPU then (:class:`ThreadClock`)."""

    number: int
    at: float
    due: float
    cpu: float
    waited: float


@dataclass(frozen=True, slots=True)
class _Sample:
    after: int
    """The number of the last beat before the block."""
    frames: Sampled
    task: str | None


class Watchdog:
    """The thread that watches one loop, whose probe publishes beats to it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        first: Beat,
        *,
        threshold: float,
        stack_depth: int,
        recording: Callable[[], bool],
        report: Callable[[BlockedLoop], None],
    ) -> None:
        self.beat = first
        """The probe's last beat: the loop thread replaces it (:meth:`publish`), this reads it."""
        self.late: deque[tuple[Beat, Beat]] = deque(maxlen=64)
        """(the beat before, the late beat) of each block: the loop appends, this pops."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._threshold = threshold
        # Once blocked, how often to look whether the loop turned: soon enough to report
        # promptly, seldom enough to cost nothing.
        self._poll = min(max(threshold / 4, 0.005), 0.05)
        self._depth = stack_depth
        self._recording = recording
        self._report = report
        self._stop = threading.Event()
        self.gc = GcPauses()
        # A thread waking from a sleep may wait for the GIL for a switch interval or two
        # while the loop runs Python code: that is not the process being descheduled.
        self._stalls = Stalls(slack=max(0.01, 4 * sys.getswitchinterval()))
        self._alarm = new_alarm(self._stalls, first.due + threshold)
        self._sample: _Sample | None = None
        self._thread = threading.Thread(target=self._run, name="toolkit-loop-watchdog", daemon=True)

    def start(self) -> None:
        self.gc.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.gc.stop()
        self._alarm.ring()
        if self._thread is threading.current_thread():
            return
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT)
        if not self._thread.is_alive():  # else it may still read it: leave it open
            self._alarm.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def publish(self, before: Beat, beat: Beat, *, late: bool) -> None:
        """The probe ran (on the loop thread): ``beat`` now, ``late`` by the threshold or
        more after ``before`` (a block to report). Rings while a report waits: moving the
        alarm would put off the ring that should wake this thread for it."""
        self.beat = beat
        if late:
            self.late.append((before, beat))
        if self.late:
            self._alarm.ring()
        else:
            self._alarm.set(beat.due + self._threshold)

    def _run(self) -> None:
        sampled_after = -1
        while True:
            try:
                beat = self.beat
                now = time.monotonic()
                blocked = now >= beat.due + self._threshold
                if blocked and beat.number != sampled_after:
                    sampled_after = beat.number
                    if self._recording():
                        self._sample = _Sample(
                            beat.number, sample_stack(self._loop_thread), running_task(self._loop)
                        )
                # Set before looking at what may have rung it: a ring after this stands.
                self._alarm.set(now + self._poll if blocked else beat.due + self._threshold)
                if self._stop.is_set():
                    return
                self._drain()
                self._alarm.wait()
            except Exception:  # never let the watchdog die, nor raise anywhere
                logger.exception("the event loop watchdog failed; it goes on")
                if self._stop.wait(self._poll):
                    return

    def _drain(self) -> None:
        while self.late:
            before, beat = self.late.popleft()
            self._report(self._block(before, beat))

    def _block(self, before: Beat, beat: Beat) -> BlockedLoop:
        start, end = before.due, beat.at
        duration = end - start
        sample = self._sample if self._sample and self._sample.after == before.number else None
        gc_time = overlap(self.gc.pauses, start, end)
        stalled = overlap(self._stalls.stalls, start, end)
        # Measured from beat to beat, slightly longer than the block: its share is what counts.
        share = duration / (beat.at - before.at)
        cpu = (beat.cpu - before.cpu) * share
        # Not scheduled: runnable and waiting for a CPU, or stopped altogether (the watchdog
        # could not run either, and the loop thread did not use the time).
        waited = (beat.waited - before.waited) * share
        descheduled = min(duration, waited + max(0.0, stalled - cpu))
        cause = cause_of(duration=duration, gc_time=gc_time, cpu=cpu, descheduled=descheduled)
        return BlockedLoop(
            started=time.time() - (time.monotonic() - start),
            duration=duration,
            cause=cause,
            gc_time=gc_time,
            cpu_time=cpu,
            descheduled_time=descheduled,
            task=sample.task if sample else None,
            stack=kept_frames(sample.frames, self._depth) if sample else (),
        )
