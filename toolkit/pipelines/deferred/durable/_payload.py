"""What a durable task carries through Redis, and the check that it survives the trip.

A task is JSON, never pickle: a worker runs code by a registered name with plain data, so a
queue anyone can write to cannot make a worker run arbitrary code, and a task written by one
version of the app is read by the next. Only values JSON gives back unchanged pass (str, int,
finite float, bool, None, lists, dicts with str keys); anything else is refused at hand-off,
naming the argument, where the caller can still fix it, rather than arriving changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from toolkit.errors import DurableArgumentError
from toolkit.pipelines.deferred._task import TaskRecord, TaskSpec

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_MAX_DEPTH: Final = 32
_ALLOWED: Final = "str, int, finite float, bool, None, and lists and dicts (str keys) of them"


def to_job(record: TaskRecord, *, max_bytes: int) -> dict[str, Any]:
    """The job's keyword arguments for ``record``: its name, id, JSON-checked arguments, the
    deferring span as a W3C trace context and the hand-off time (``time.time()``: another
    machine reads it). Raises :class:`~toolkit.errors.DurableArgumentError` naming the first
    argument that would not come back unchanged, or saying by how much the task is over
    ``max_bytes``."""
    args, kwargs = encode(record.name, record.args, record.kwargs, max_bytes=max_bytes)
    return {
        "name": record.name,
        "id": record.id,
        "args": args,
        "kwargs": kwargs,
        "trace": _carrier(record.link),
        "enqueued_at": record.enqueued_at,
    }


def name_of(job: Mapping[str, Any]) -> str:
    """The registered name of the task a job carries."""
    return str(job.get("name", ""))


def from_job(
    job: Mapping[str, Any],
    spec: TaskSpec,
    *,
    attempt: int,
    delivery: Mapping[str, str] | None = None,
) -> TaskRecord:
    """The record a worker runs: the job's task with ``spec`` (found by its name), as its
    ``attempt``-th delivery; ``delivery``: the worker's attributes for its span."""
    return TaskRecord(
        id=str(job["id"]),
        spec=spec,
        args=tuple(job.get("args") or ()),
        kwargs=dict(job.get("kwargs") or {}),
        link=_span_context(job.get("trace") or {}),
        enqueued_at=float(job.get("enqueued_at") or 0.0),
        attempt=attempt,
        delivery=delivery,
    )


def _carrier(link: SpanContext | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    if link is not None and link.is_valid:
        _PROPAGATOR.inject(carrier, context=set_span_in_context(NonRecordingSpan(link)))
    return carrier


def _span_context(carrier: Mapping[str, Any]) -> SpanContext | None:
    if not carrier:
        return None
    text = {str(key): str(value) for key, value in carrier.items()}
    found = get_current_span(_PROPAGATOR.extract(text, context=Context())).get_span_context()
    return found if found.is_valid else None


def encode(
    task: str, args: Sequence[Any], kwargs: Mapping[str, Any], *, max_bytes: int
) -> tuple[list[Any], dict[str, Any]]:
    """``args`` and ``kwargs``, checked to come back from JSON unchanged and to fit in
    ``max_bytes``."""
    listed = list(args)
    for index, value in enumerate(listed):
        _check(value, task, f"argument {index}", 0)
    named = dict(kwargs)
    for name, value in named.items():
        _check(value, task, f"argument {name!r}", 0)
    size = len(json.dumps([listed, named], separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise DurableArgumentError(
            f"{task}: its arguments are {size} bytes of JSON, over defer.durable."
            f"max_payload_bytes ({max_bytes}); pass an id and load the data in the task"
        )
    return listed, named


def _check(value: Any, task: str, where: str, depth: int) -> None:
    if value is None or type(value) in (str, int, bool):
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise DurableArgumentError(
                f"{task} {where}: {value!r} is not JSON; durable tasks take {_ALLOWED}"
            )
        return
    if depth >= _MAX_DEPTH:
        raise DurableArgumentError(f"{task} {where}: nested deeper than {_MAX_DEPTH} levels")
    if type(value) is list:
        for index, item in enumerate(value):
            _check(item, task, f"{where}[{index}]", depth + 1)
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise DurableArgumentError(
                    f"{task} {where}: key {key!r} is a {type(key).__name__}; JSON keys are "
                    "str (it would arrive as a different key)"
                )
            _check(item, task, f"{where}[{key!r}]", depth + 1)
        return
    kind = type(value).__name__
    hint = " (it would arrive as a list)" if isinstance(value, tuple) else ""
    raise DurableArgumentError(
        f"{task} {where}: a {kind} is not sent as JSON unchanged{hint}; durable tasks take "
        f"{_ALLOWED} (never pickle): pass its data, or an id to load it by"
    )
