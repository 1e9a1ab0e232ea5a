"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

from typing import Final

from toolkit.telemetry._gen_ai_names import GEN_AI_DURATION_BUCKETS
from toolkit.telemetry.metric import HISTOGRAM, Metric

# --- fan-out (toolkit.gather) ---------------------------------------------------------------

# --- request deadlines ------------------------------------------------------------------------

# --- deferred work (toolkit.defer, @toolkit.background) ---------------------------------------

# --- offloaded calls (@toolkit.offload, toolkit.run_sync) -------------------------------------

# --- streams (@toolkit.resilient on an async generator function) ------------------------------
_FUNCTION: Final = "toolkit.resilience.function"  # names.RESILIENCE_FUNCTION, declared there

RESILIENCE_STREAM_OUTCOME: Final = "toolkit.resilience.stream.outcome"
"""How a ``@resilient`` stream ended: one of :data:`RESILIENCE_STREAM_OUTCOMES`."""
RESILIENCE_STREAM_CHUNKS: Final = "toolkit.resilience.stream.chunks"
"""Chunks the consumer had received when the stream was interrupted (span events only)."""

STREAM_COMPLETE: Final = "complete"
"""The dependency's stream ended normally (an empty stream included)."""
STREAM_FALLBACK: Final = "fallback"
"""The stream failed before its first chunk and the fallback answered instead."""
STREAM_FAILED: Final = "failed"
"""The stream failed before its first chunk (after its retries), with no fallback: raised."""
STREAM_INTERRUPTED: Final = "interrupted"
"""The stream failed after its first chunk: raised to the consumer, never retried or answered
by the fallback (the consumer had chunks already)."""
STREAM_CLOSED: Final = "closed"
"""The consumer stopped early (``aclose()``, left its loop, was cancelled): no failure."""
RESILIENCE_STREAM_OUTCOMES: Final = (
    STREAM_COMPLETE,
    STREAM_FALLBACK,
    STREAM_FAILED,
    STREAM_INTERRUPTED,
    STREAM_CLOSED,
)

RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK: Final = "toolkit.resilience.stream.time_to_first_chunk"
"""From the call of a ``@resilient`` stream to its first chunk reaching the consumer, retries
and backoff (or the fallback) included, by function."""
RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK_METRIC: Final = Metric(
    RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK,
    HISTOGRAM,
    unit="s",
    description="Time from the call of a resilient stream to its first chunk, retries included.",
    attributes=(_FUNCTION,),
    buckets=GEN_AI_DURATION_BUCKETS,
)

RESILIENCE_STREAM_DURATION: Final = "toolkit.resilience.stream.duration"
"""From the call of a ``@resilient`` stream to its end, by function and outcome."""
RESILIENCE_STREAM_DURATION_METRIC: Final = Metric(
    RESILIENCE_STREAM_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of resilient streams, from the call to the end, by outcome.",
    attributes=(_FUNCTION, RESILIENCE_STREAM_OUTCOME),
    buckets=GEN_AI_DURATION_BUCKETS,
)
