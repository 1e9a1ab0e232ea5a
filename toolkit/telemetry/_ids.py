"""Span and trace ids for the tracer provider the toolkit creates, drawn from the toolkit's
own random stream (:data:`toolkit._random.RANDOM`), never from the global one."""

from __future__ import annotations

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID

from toolkit._random import RANDOM


class PrivateIdGenerator(IdGenerator):
    """Random trace and span ids, as the SDK's default generator makes them, from
    :data:`RANDOM` instead of the global stream."""

    def generate_span_id(self) -> int:
        span_id = RANDOM.getrandbits(64)
        while span_id == INVALID_SPAN_ID:
            span_id = RANDOM.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = RANDOM.getrandbits(128)
        while trace_id == INVALID_TRACE_ID:
            trace_id = RANDOM.getrandbits(128)
        return trace_id
