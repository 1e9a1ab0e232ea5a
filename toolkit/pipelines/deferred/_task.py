"""Deferred work: what a task is (:class:`TaskSpec`), one hand-off of it (:class:`TaskRecord`),
what the caller gets back (:class:`TaskHandle`), and the :class:`TaskRunner` protocol every
mode implements.

The runner protocol
-------------------
``toolkit.defer(fn, ...)`` and ``fn.defer(...)`` build a :class:`TaskRecord` in the deferring
context and hand it to the current runner (``install()`` sets it; ``_background`` holds it):

- ``await runner.start()``: once, in the app's lifespan, before the first hand-off is served.
  It reports what the previous run of the process lost, if it can tell.
- ``await runner.submit(record)``: accept the record, or raise
  :class:`~toolkit.errors.DeferRefused`. It runs in the deferring context, so it may wait
  for room at most ``toolkit._deadlines.bounded(handoff_timeout)``; it never runs the task.
  Once it returned, the task is the runner's: it must run, be retried, or be counted as
  cancelled or lost, never dropped silently.
- ``await runner.drain(grace)``: at shutdown (idempotent: a second call returns at once).
  Tasks accepted may finish for ``grace`` seconds; what is left is cancelled (or, for a
  durable engine, left to the engine), counted and logged. Hand-offs after it are refused
  (``stopped``).

A task runs in a fresh context: no deadline, no flag pin and no current span of the request
that deferred it. Its span is a root, linked to ``record.link``.

A runner that crosses processes (the durable mode) serialises ``name``, ``args``,
``kwargs``, ``id``, ``enqueued_at``, ``attempt`` and the link (a W3C ``traceparent`` made
from the span context), and finds the function again on the worker by its name with
``toolkit.pipelines.deferred._background.lookup(name)``: every ``@background`` function registers
there at import time, by ``name=`` or ``module:qualname``. ``spec.function`` and
``spec.retry`` are the in-process shortcut to the same thing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio.to_thread
from opentelemetry.trace import SpanContext

from toolkit._default import DEFAULT, Default
from toolkit.resilience.retry import RetryPolicy


def retry_policy(retries: int | RetryPolicy) -> RetryPolicy:
    """A task's retry policy: ``retries`` retries of any exception with the policy's
    backoff, or the policy given."""
    if isinstance(retries, RetryPolicy):
        return retries
    return RetryPolicy(on=Exception, attempts=retries + 1)


def task_name(function: Callable[..., Any]) -> str:
    """``module:qualname`` of ``function``, the name a task has unless it is given one."""
    module = getattr(function, "__module__", None) or "unknown"
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}:{qualname}"


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))
    if inspect.isawaitable(result):  # a plain function that returns a coroutine (a lambda)
        return await result
    return result


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What runs: the function under its registered name, and how failures are retried.

    Args:
        name: ``memory.extract``, or ``module:qualname`` when not given one.
        function: the function as written: a coroutine function, or a plain function (run in
            a worker thread, off the event loop).
        retry: its retry policy; ``DEFAULT``: the ``defer.retries`` setting's.
    """

    name: str
    function: Callable[..., Any]
    retry: RetryPolicy | Default = DEFAULT
    call: Callable[..., Awaitable[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        function = self.function
        if any(
            inspect.iscoroutinefunction(candidate)
            for candidate in (function, inspect.unwrap(function), type(function).__call__)
        ):
            call = function  # a coroutine function, or an object whose __call__ is one
        else:
            call = functools.partial(_in_thread, function)
        object.__setattr__(self, "call", call)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One hand-off of a task: made in the deferring context, read by the runner.

    Args:
        id: unique per hand-off (the handle's id).
        spec: what runs.
        args / kwargs: the arguments it was deferred with.
        link: the deferring span's context (the task's span links to it), or None.
        enqueued_at: ``time.time()`` of the hand-off (wall clock: a durable engine compares
            it across processes).
        attempt: which delivery this is; 1 unless a durable engine delivers it again.
        delivery: what the engine that delivered it adds to the task's span (a durable
            worker's messaging attributes); None in process.
    """

    id: str
    spec: TaskSpec
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    link: SpanContext | None
    enqueued_at: float
    attempt: int = 1
    delivery: Mapping[str, str] | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """What a hand-off returns, once the runner accepted the task (or, with the
    ``pipelines.defer`` flag off, once the work ran inline).

    Args:
        id: the task's id (``toolkit.task.id`` on its span).
        name: its registered name.
        inline: True when the flag was off and the work already ran.
    """

    id: str
    name: str
    inline: bool = False


class TaskRunner(Protocol):
    """Runs deferred tasks (see the module's docstring for the contract)."""

    async def start(self) -> None:
        """Start taking tasks; report what the previous run lost, if it can tell."""

    async def submit(self, record: TaskRecord) -> None:
        """Accept ``record`` or raise :class:`~toolkit.errors.DeferRefused`."""

    async def drain(self, grace: float) -> None:
        """Let accepted tasks finish for ``grace`` seconds, then stop; idempotent."""
