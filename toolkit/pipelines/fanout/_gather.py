"""``toolkit.gather(...)``: branches run side by side, each within its own deadline, with its
fallback, and every outcome returned (partial results are normal, never an exception).

How the deadlines nest: the fan-out sets its ``deadline=`` as the current deadline (an outer
one, the request's, still wins when sooner), and each branch sets its own inside that, so a
``@resilient`` timeout or a pool acquire inside a branch fits in what the branch has. Every
branch ends by its deadline on its own (an ``asyncio.timeout``); the fan-out waits for them
until its deadline, then cancels and awaits whatever is left (``_tasks.stop_tasks``: a branch
that swallowed its cancellation is cancelled again), so nothing the fan-out started outlives it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from toolkit import _deadlines
from toolkit._duration import parse_seconds
from toolkit._fallback import mark_fallback
from toolkit._tasks import stop_tasks
from toolkit.errors import ConfigurationError, DeadlineExceeded
from toolkit.flags import PIPELINES_GATHER, FlagSource, current_flags
from toolkit.pipelines.fanout._branch import (
    ANSWERED,
    FAILED,
    Branch,
    BranchOutcome,
    BranchResult,
    GatherResult,
)
from toolkit.pipelines.fanout._telemetry import FanoutTelemetry, current_fanout_telemetry
from toolkit.resilience.classify import error_type
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.pipelines")

_PARTIAL = frozenset({"fallback", "failed", "timeout"})
"""Outcomes that make a fan-out's answer partial (``cancelled`` is what first=/enough= asked)."""


async def gather(
    *branches: Branch[Any],
    name: str = "gather",
    deadline: float | str | None = None,
    first: int | None = None,
    enough: Callable[[Any], bool] | None = None,
    flags: FlagSource | None = None,
) -> GatherResult:
    """Run ``branches`` side by side and return how each ended.

        result = await toolkit.gather(
            toolkit.branch("vector", vector_search, query, deadline="300ms", fallback=[]),
            toolkit.branch("graph", graph_search, query, deadline=0.3),
            deadline="1s",
        )
        result.values()   # {"vector": [...], "graph": [...]}: the branches that answered

    Args:
        branches: what to run, each made by :func:`~toolkit.branch` (names unique).
        name: the fan-out's name, on its span (``toolkit.gather {name}``) and metric label.
        deadline: seconds (or ``"1s"``) the whole fan-out may take; the current deadline
            (the request's) still holds. None: only the current one. Branches still running
            then are cancelled (outcome ``timeout``, or ``fallback`` with a value fallback).
        first: return once this many branches answered ``ok``, cancelling the rest (outcome
            ``cancelled``); None: wait for every branch.
        enough: a predicate on an ``ok`` branch's value: once one value satisfies it, the rest
            are cancelled. None: none. A predicate that raises counts as not satisfied (the
            error is recorded on the fan-out's span).
        flags: where the ``pipelines.gather`` flag is read; the current flags when None. Off
            runs the branches as a plain ``asyncio.gather`` would: each to its end, no
            deadline, fallback, early return, span or metric; the result has the same shape.

    Returns:
        A :class:`GatherResult`, even when every branch failed (``result.failed`` names
        them). Cancelling the caller cancels every branch, awaits them and raises
        ``CancelledError``.

    Raises:
        ConfigurationError: a branch that is not a :func:`~toolkit.branch`, two branches of
            one name, a ``deadline`` that is not positive, ``first`` outside 1..len(branches).
    """
    seconds = _check(branches, name, deadline, first, enough)
    if not (flags or current_flags()).is_enabled(PIPELINES_GATHER):
        return await _plain(branches)
    fanout = _Fanout(current_fanout_telemetry(), name, branches, first, enough)
    with _deadlines.deadline(seconds) as left:
        return await fanout.run(left)


def _check(
    branches: tuple[Branch[Any], ...],
    name: str,
    deadline: float | str | None,
    first: int | None,
    enough: Callable[[Any], bool] | None,
) -> float | None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"gather(name={name!r}): a name, e.g. name='memory.search'")
    seen: set[str] = set()
    for given in branches:
        if not isinstance(given, Branch):
            raise ConfigurationError(
                f"gather({given!r}): each branch made by toolkit.branch(name, function, ...)"
            )
        if given.name in seen:
            raise ConfigurationError(f"gather(): two branches named {given.name!r}")
        seen.add(given.name)
    if first is not None and (
        isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= len(branches)
    ):
        raise ConfigurationError(
            f"gather(first={first!r}): a count of branches, 1 to {len(branches)}"
        )
    if enough is not None and not callable(enough):
        raise ConfigurationError(f"gather(enough={enough!r}): a predicate on a branch's value")
    if deadline is None:
        return None
    try:
        seconds = parse_seconds(deadline)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"gather(deadline={deadline!r}): {exc}; e.g. '1s'") from None
    if seconds <= 0:
        raise ConfigurationError(f"gather(deadline={deadline!r}): positive, e.g. '1s'")
    return seconds


class _Fanout:
    """One running fan-out: its branches' tasks, their results as they come, why it stopped."""

    __slots__ = (
        "branches",
        "enough",
        "first",
        "name",
        "ok",
        "results",
        "satisfied",
        "stop",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: FanoutTelemetry,
        name: str,
        branches: tuple[Branch[Any], ...],
        first: int | None,
        enough: Callable[[Any], bool] | None,
    ) -> None:
        self.telemetry = telemetry
        self.name = name
        self.branches = branches
        self.first = first
        self.enough = enough
        self.results: dict[str, BranchResult[Any]] = {}
        self.ok = 0
        self.satisfied = False
        self.stop = "all"

    async def run(self, left: float | None) -> GatherResult:
        span = self.telemetry.tracer.start_span(
            f"{names.FANOUT_SPAN} {self.name}", kind=SpanKind.INTERNAL
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            # The tasks copy this context: the fan-out's deadline and span are theirs.
            tasks = [asyncio.create_task(self._branch(b)) for b in self.branches]
        finally:
            context.detach(token)
        try:
            await self._wait(tasks, left)
        finally:
            # Whatever way out (a return, the deadline, the caller cancelled): nothing stays.
            await _settle(tasks)
            self._end(span, left)
        result = GatherResult(
            {b.name: self.results.get(b.name) or self._lost(b) for b in self.branches}
        )
        if any(r.outcome in _PARTIAL for r in result.results().values()):
            # A partial answer: an enclosing @cached must not keep it past the outage.
            mark_fallback()
        return result

    async def _wait(self, tasks: list[asyncio.Task[None]], left: float | None) -> None:
        pending: set[asyncio.Task[None]] = set(tasks)
        loop = asyncio.get_running_loop()
        ends = None if left is None else loop.time() + left
        each = self.first is not None or self.enough is not None
        when = asyncio.FIRST_COMPLETED if each else asyncio.ALL_COMPLETED
        while pending:
            timeout = None if ends is None else max(0.0, ends - loop.time())
            done, pending = await asyncio.wait(pending, timeout=timeout, return_when=when)
            if not done and pending:
                self.stop = "deadline"  # branches that did not end by it (one swallowed it)
                return
            if self.first is not None and self.ok >= self.first:
                self.stop = "first" if pending else "all"
                return
            if self.satisfied:
                self.stop = "enough" if pending else "all"
                return
        if ends is not None and loop.time() >= ends:
            self.stop = "deadline"  # the last branches ended by being cut at it

    def _lost(self, given: Branch[Any]) -> BranchResult[Any]:
        """A branch that never recorded its end: it swallowed every cancellation."""
        logger.warning(
            "toolkit.gather %s: branch %s ignored its cancellation and is still running",
            self.name,
            given.name,
        )
        outcome: BranchOutcome = "timeout" if self.stop == "deadline" else "cancelled"
        error = DeadlineExceeded(f"branch {given.name!r}: still running past the deadline")
        return BranchResult(given.name, outcome, error=error if outcome == "timeout" else None)

    async def _branch(self, given: Branch[Any]) -> None:
        telemetry = self.telemetry
        started = time.monotonic()
        span = telemetry.tracer.start_span(
            f"{names.BRANCH_SPAN} {given.name}", kind=SpanKind.INTERNAL
        )
        token = context.attach(trace.set_span_in_context(span))
        outcome: BranchOutcome = "cancelled"
        value: Any = None
        error: BaseException | None = None
        try:
            with _deadlines.deadline(given.deadline) as left:
                if span.is_recording():
                    span.set_attribute(names.FANOUT_BRANCH, given.name)
                    if left is not None:
                        span.set_attribute(names.DEADLINE_BUDGET, left)
                timer = asyncio.timeout(left)
                try:
                    async with timer:
                        value = await given.function(*given.args, **given.kwargs)
                    outcome = "ok"
                except TimeoutError as exc:  # its deadline, or a timeout inside that it fit
                    outcome, error = "timeout", exc
                    if timer.expired() and not isinstance(exc, DeadlineExceeded):
                        error = DeadlineExceeded(
                            f"branch {given.name!r}: its {left:.3g}s ran out"
                        ).with_traceback(exc.__traceback__)
                except Exception as exc:
                    outcome, error = "failed", exc
            if outcome != "ok" and given.fallback is not None:
                outcome, value, error = await _fall_back(given, error)
        except asyncio.CancelledError:
            if self.stop == "deadline":  # cut at the fan-out's deadline, not by first/enough
                outcome = "timeout"
                error = DeadlineExceeded(f"branch {given.name!r}: the fan-out's deadline passed")
                if given.fallback is not None and not callable(given.fallback):
                    outcome, value = "fallback", given.fallback
            raise
        finally:
            context.detach(token)
            duration = time.monotonic() - started
            self.results[given.name] = BranchResult(given.name, outcome, value, error, duration)
            if outcome == "ok":
                self.ok += 1
                self._judge(value)
            _end_branch(span, outcome, error)
            telemetry.record(self.name, given.name, outcome, duration)

    def _judge(self, value: Any) -> None:
        if self.enough is None or self.satisfied:
            return
        try:
            self.satisfied = bool(self.enough(value))
        except Exception as exc:
            logger.exception("toolkit.gather %s: the enough= predicate raised", self.name)
            span = trace.get_current_span()
            if span.is_recording():
                span.record_exception(exc)

    def _end(self, span: trace.Span, left: float | None) -> None:
        if span.is_recording():
            results = self.results.values()
            span.set_attributes(
                {
                    names.FANOUT_NAME: self.name,
                    names.FANOUT_BRANCHES: len(self.branches),
                    names.FANOUT_ANSWERED: sum(r.outcome in ANSWERED for r in results),
                    names.FANOUT_FAILED: [r.name for r in results if r.outcome in FAILED],
                    names.FANOUT_STOPPED: self.stop,
                }
            )
            if left is not None:
                span.set_attribute(names.DEADLINE_BUDGET, left)
        span.end()


async def _settle(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and await ``tasks`` (``stop_tasks``), to the end even when the caller is
    cancelled meanwhile: its cancellation is raised once they are stopped."""
    cancelled = False
    while True:
        try:
            await stop_tasks(tasks)
        except asyncio.CancelledError:
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError


async def _fall_back(
    given: Branch[Any], error: BaseException | None
) -> tuple[BranchOutcome, Any, BaseException | None]:
    """The branch's fallback answer, or how the fallback itself ended."""
    fallback = given.fallback
    if not callable(fallback):
        return "fallback", fallback, error
    try:
        # In what is left of the fan-out's deadline (the branch's own is over).
        async with asyncio.timeout(_deadlines.time_left()):
            return "fallback", await fallback(*given.args, **given.kwargs), error
    except TimeoutError as exc:
        return "timeout", None, exc
    except Exception as exc:
        exc.__context__ = exc.__context__ or error
        return "failed", None, exc


def _end_branch(span: trace.Span, outcome: BranchOutcome, error: BaseException | None) -> None:
    if span.is_recording():
        span.set_attribute(names.FANOUT_OUTCOME, outcome)
        if error is not None:
            span.set_attribute(names.ERROR_TYPE, error_type(error))
            if outcome in FAILED:
                span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
    span.end()


async def _plain(branches: tuple[Branch[Any], ...]) -> GatherResult:
    """The ``pipelines.gather`` flag off: what a hand-written ``asyncio.gather`` does."""

    async def one(given: Branch[Any]) -> BranchResult[Any]:
        started = time.monotonic()
        try:
            value = await given.function(*given.args, **given.kwargs)
        except Exception as exc:
            outcome: BranchOutcome = "timeout" if isinstance(exc, TimeoutError) else "failed"
            return BranchResult(given.name, outcome, error=exc, duration=time.monotonic() - started)
        return BranchResult(given.name, "ok", value, duration=time.monotonic() - started)

    results = await asyncio.gather(*(one(b) for b in branches))
    return GatherResult({r.name: r for r in results})
