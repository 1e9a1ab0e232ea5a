"""Histogram points handed to the OpenTelemetry SDK in batches, not one by one on the hot path.

A synchronous ``record()`` on the Python SDK cleans, copies, hashes and aggregates its
attributes: about 6 µs in a loop of records, but 12-14 µs when it runs between the span
work of a step or a model call, which has pushed the SDK's metric code out of the CPU's
caches (docs/performance.md, "Agent layer"). The agent layer's points, the HTTP middleware's
request durations and a durable hand-off's (between its Redis round trips) are therefore
queued (a tuple appended, well under a µs) and recorded :data:`BATCH` at a time by the thread
that fills the batch, and at every collection: an observable instrument of the same meter
(the agent layer's cost counter, the HTTP active requests, the hand-off counter), read by the
SDK before it reads its aggregations, flushes the queue first, so an export or a ``/metrics``
scrape sees every point recorded before it.

The SDK still records and aggregates every point itself, so the application's views,
buckets, temporality and readers apply as to any other instrument; each point carries the
context it was recorded in, so an exemplar names the trace it came from. What is queued is
bounded: at most a batch per thread filling it at once.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Final

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter

from toolkit.telemetry.counts import Counts

logger = logging.getLogger("toolkit.telemetry")

BATCH: Final = 64
"""Points recorded together: past about 32, a batch costs what a loop of records does
(measured), and 64 points take the thread that fills the batch about 0.4 ms."""

_Point = tuple[Histogram, float, Mapping[str, str | int], Context | None]


class BatchedRecords:
    """The queue of one meter's points; :func:`batched_records` gives the meter's one."""

    __slots__ = ("__weakref__", "_batch", "_failed", "_queue")

    def __init__(self, batch: int = BATCH) -> None:
        self._queue: deque[_Point] = deque()
        self._batch = batch
        self._failed = False

    def record(
        self,
        histogram: Histogram,
        amount: float,
        attributes: Mapping[str, str | int],
        context: Context | None,
    ) -> None:
        """Queue ``histogram.record(amount, attributes, context)``; the batch it fills is
        recorded at once."""
        queue = self._queue
        queue.append((histogram, amount, attributes, context))
        if len(queue) >= self._batch:
            self.flush()

    def flush(self) -> None:
        """Record every queued point (what collection calls first). Never raises: a point
        the SDK refuses is logged once and dropped."""
        pop = self._queue.popleft
        while True:
            try:
                histogram, amount, attributes, context = pop()
            except IndexError:  # empty, or emptied by another thread's flush
                return
            try:
                histogram.record(amount, attributes, context)
            except Exception:
                if not self._failed:
                    self._failed = True
                    logger.exception("recording a histogram point failed; it is dropped")

    def __len__(self) -> int:
        return len(self._queue)


_shared: weakref.WeakKeyDictionary[Meter, BatchedRecords] = weakref.WeakKeyDictionary()


def batched_records(meter: Meter, collected: Counts) -> BatchedRecords:
    """The queue of ``meter``'s points, made once per meter and flushed whenever
    ``collected`` (an observable store of the same meter) is read by a collection."""
    records = _shared.get(meter)
    if records is None:
        records = _shared[meter] = BatchedRecords()
        collected.before_observe(records.flush)
    return records
