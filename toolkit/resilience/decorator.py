"""``@resilient``: a deadline, a circuit breaker, retries and a fallback around an async call.

The layers, outermost first, and why in this order:

1. **fallback** catches whatever the rest ends with (a refusal, the deadline, the last failure)
   and answers instead, so it sees every way the call can fail.
2. **deadline** (``timeout=``) bounds everything inside it, backoff sleeps included: the caller
   waits at most this long, however many retries are left. The current deadline (a request's,
   a fan-out branch's, ``toolkit.deadline``) bounds it too: the smaller wins, and a call cut
   by the current deadline raises ``DeadlineExceeded`` (a ``TimeoutError``), which its
   breaker counts as neither success nor failure (the call had less time than its own).
3. **breaker** sees only a call's *final* outcome: a call that failed twice and then succeeded
   is one success, so retries do not inflate the failure rate, and while it is open no
   attempt (first or retry) is made at all. A call cut by the deadline is a failure (the
   dependency was too slow); a call cancelled from outside is neither.
4. **retries** repeat the attempt (``retry_on=`` decides which errors), asking the retry
   budget before each one.

Nested calls (a ``@resilient`` function calling another, in the same task; see
``_nesting``): what leaves an inner call with a breaker belongs to that breaker, so the outer
breaker does not count it, not even a deadline of the outer call that passed while the inner
call ran or waited to retry; an error the inner retries already ended is not retried again.
A fallback's answer is marked so that an enclosing ``@cached`` does not store it
(``toolkit/_fallback.py``).

An async generator function (a stream) gets the same layers up to its first chunk and none
after it: see ``_stream``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from toolkit._deadlines import time_left
from toolkit._default import DEFAULT, Default
from toolkit._duration import parse_seconds
from toolkit._fallback import mark_fallback
from toolkit.errors import ConfigurationError, DeadlineExceeded
from toolkit.flags import RESILIENCE, FlagSource, current_flags
from toolkit.resilience._nesting import claim
from toolkit.resilience._scope import record_cut, remaining
from toolkit.resilience._stream import StreamTelemetry, fallback_problem, stream_wrapper
from toolkit.resilience._telemetry import FallbackTelemetry, RetryTelemetry
from toolkit.resilience.breaker import CircuitBreaker
from toolkit.resilience.budget import RetryBudget
from toolkit.resilience.classify import ErrorPredicate
from toolkit.resilience.registry import BreakerRegistry, current_breakers
from toolkit.resilience.retry import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class ResilientDecorator(Protocol):
    """What ``@resilient(...)`` returns: it keeps the decorated function's signature, a
    coroutine function or an async generator function (a stream)."""

    @overload
    def __call__(
        self, function: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(
        self, function: Callable[P, AsyncIterator[T]]
    ) -> Callable[P, AsyncIterator[T]]: ...


def resilient(
    *,
    breaker: str | CircuitBreaker | None = None,
    retries: int | RetryPolicy | None = None,
    retry_on: ErrorPredicate | type[BaseException] | tuple[type[BaseException], ...] | None = None,
    timeout: float | str | Default | None = DEFAULT,
    fallback: Callable[..., Awaitable[Any]] | Callable[..., AsyncIterator[Any]] | None = None,
    budget: RetryBudget | float | Default | None = DEFAULT,
    flags: FlagSource | None = None,
) -> ResilientDecorator:
    """Make an async call to a flaky dependency (an LLM, a tool, a store) sturdy.

        @toolkit.resilient(
            breaker="openai", retries=3, retry_on=toolkit.resilience.provider_errors,
            timeout="20s", fallback=canned_answer,
        )
        async def call_llm(prompt: str) -> str: ...

    On an async generator function (a stream: ``async def`` with ``yield``) the breaker,
    retries, ``timeout=`` and fallback apply until the first chunk and never after it; see
    docs/pipelines.md (Streams).

    Args:
        breaker: a breaker name (from the current :class:`BreakerRegistry`, one per provider
            or model) or a :class:`CircuitBreaker`; none when None.
        retries: attempts in all as an int (then ``retry_on`` is required), or a
            :class:`RetryPolicy`; none when None.
        retry_on: which errors to retry with ``retries=<int>``: a predicate such as
            ``toolkit.resilience.provider_errors`` or exception classes.
        timeout: deadline of the whole call, backoff included (``"20s"`` or seconds); the
            ``resilience.timeout`` setting by default; None for none. The current deadline
            (``toolkit.deadline``, a request's, a fan-out branch's) still holds when sooner.
            For a stream, the deadline of its first chunk; the current deadline bounds the
            rest.
        fallback: an async function taking the same arguments, awaited instead when the call
            ends in an error (refused, timed out, or failed after its retries). Cancellation is
            never answered by the fallback. An enclosing ``@cached`` does not store its answer.
            For a stream: an async generator function, or an async function returning an
            iterable, whose chunks are streamed instead (only before the first chunk).
        budget: the retry budget: a :class:`RetryBudget` (pass one object to several
            functions to share it), a ratio, None for none; by default one of this
            function's own, from the ``resilience`` settings.
        flags: where the ``resilience`` flag is read; the current store when None. Off means
            the bare call, at the next call, on every instance.

    Raises:
        ConfigurationError: at decoration, for a sync function or an invalid argument.
        CircuitOpenError: at call time, when the breaker refuses and there is no fallback.
        TimeoutError: at call time, when the deadline passes and there is no fallback;
            ``DeadlineExceeded`` (a ``TimeoutError``) when it was the current deadline.
    """
    if isinstance(retries, int) and not isinstance(retries, bool):
        if retry_on is None:
            raise ConfigurationError(
                f"@resilient(retries={retries}): say which errors may be retried, e.g. "
                "retry_on=toolkit.resilience.provider_errors (timeouts, connection errors, "
                "429, 5xx)"
            )
        policy: RetryPolicy | None = (
            RetryPolicy(on=retry_on, attempts=retries) if retries > 1 else None
        )
        if retries < 1:
            raise ConfigurationError(f"@resilient(retries={retries}): attempts in all, 1 or more")
    elif isinstance(retries, RetryPolicy) or retries is None:
        policy = retries
        if retry_on is not None:
            raise ConfigurationError(
                "@resilient(retry_on=...) goes with retries=<int>; a RetryPolicy has its own on="
            )
    else:
        raise ConfigurationError(
            f"@resilient(retries={retries!r}): attempts as an int (with retry_on=) or a RetryPolicy"
        )
    if breaker is not None and not isinstance(breaker, str | CircuitBreaker):
        raise ConfigurationError(
            f"@resilient(breaker={breaker!r}): a name such as 'openai', or a CircuitBreaker"
        )
    deadline: float | Default | None = DEFAULT
    if timeout is None or timeout is DEFAULT:
        deadline = timeout
    else:
        try:
            deadline = parse_seconds(timeout)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"@resilient(timeout={timeout!r}): {exc}; e.g. '20s'") from exc
        if deadline <= 0:
            raise ConfigurationError(f"@resilient(timeout={timeout!r}): positive, e.g. '20s'")
    if fallback is not None and fallback_problem(fallback) is not None:
        sync_generator = (
            " (a sync generator function cannot answer: make it async def with yield)"
            if inspect.isgeneratorfunction(fallback)
            else ""
        )
        raise ConfigurationError(
            f"@resilient(fallback={fallback!r}): an async function taking the same arguments "
            f"(or, for a stream, an async generator function){sync_generator}"
        )
    if isinstance(budget, float | int) and not isinstance(budget, bool):
        budget = RetryBudget(float(budget))
    elif not (budget is None or isinstance(budget, RetryBudget | Default)):
        raise ConfigurationError(f"@resilient(budget={budget!r}): a RetryBudget, a ratio or None")

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        guard = _Guard(function, breaker, policy, deadline, fallback, budget, flags)
        if guard.is_stream:
            return functools.wraps(function)(stream_wrapper(guard))

        @functools.wraps(function)
        async def resilient_call(*args: Any, **kwargs: Any) -> Any:
            return await guard.call(args, kwargs)

        return resilient_call

    return cast(ResilientDecorator, decorate)


class _Guard:
    """Everything about one decorated function that can be known before its first call."""

    def __init__(
        self,
        function: Callable[..., Any],
        breaker: str | CircuitBreaker | None,
        policy: RetryPolicy | None,
        deadline: float | Default | None,
        fallback: Callable[..., Any] | None,
        budget: RetryBudget | Default | None,
        flags: FlagSource | None,
    ) -> None:
        qualname = getattr(function, "__qualname__", repr(function))
        self.is_stream = inspect.isasyncgenfunction(function)
        if not (self.is_stream or inspect.iscoroutinefunction(function)):
            kind = (
                "a sync generator function; make it async def with yield"
                if inspect.isgeneratorfunction(function)
                else "neither"
            )
            raise ConfigurationError(
                f"@resilient needs an async function (async def), or an async generator "
                f"function (a stream): {qualname} is {kind}"
            )
        if inspect.isasyncgenfunction(fallback) and not self.is_stream:
            raise ConfigurationError(
                f"@resilient(fallback={fallback!r}) on {qualname}: an async generator function "
                f"answers for a stream; {qualname} returns one value, so its fallback is an "
                "async function"
            )
        self.function = function
        self.qualname = qualname
        self.breaker_spec = breaker
        self.policy = policy
        self.deadline_spec = deadline
        self.fallback = fallback
        self.budget_spec = budget
        self.flags = flags
        # Resolved against the current registry at the first call, again if it changes
        # (install() replaces the in-process registry with the app's).
        self.registry: BreakerRegistry | None = None
        self.breaker: CircuitBreaker | None = (
            breaker if isinstance(breaker, CircuitBreaker) else None
        )
        self.deadline: float | None = None
        self.budget: RetryBudget | None = None
        self.retry_telemetry: RetryTelemetry | None = None
        self.stream_telemetry: StreamTelemetry | None = None
        self.fallback_telemetry: FallbackTelemetry | None = None

    def _resolve(self, registry: BreakerRegistry) -> None:
        self.registry = registry
        settings = registry.settings
        if isinstance(self.breaker_spec, str):
            self.breaker = registry.get(self.breaker_spec)
        self.deadline = settings.timeout if self.deadline_spec is DEFAULT else self.deadline_spec
        if self.is_stream:
            self.stream_telemetry = StreamTelemetry(self.qualname, registry.meter_provider)
        if self.fallback is not None:
            self.fallback_telemetry = FallbackTelemetry(self.qualname, registry.meter_provider)
        if self.policy is None:
            return
        if self.budget_spec is DEFAULT:
            # This function's own: functions behind one breaker do not spend each other's.
            self.budget = RetryBudget(
                settings.retry_budget,
                minimum=settings.retry_budget_minimum,
                window=settings.retry_budget_window,
            )
        else:
            self.budget = self.budget_spec
        self.retry_telemetry = RetryTelemetry(self.qualname, registry.meter_provider)

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not (self.flags or current_flags()).is_enabled(RESILIENCE):
            return await self.function(*args, **kwargs)
        registry = current_breakers()
        if registry is not self.registry:
            self._resolve(registry)
        if self.fallback is None:
            return await self._bounded(args, kwargs)
        try:
            return await self._bounded(args, kwargs)
        except Exception as exc:
            mark_fallback()
            cast(FallbackTelemetry, self.fallback_telemetry).answered(exc)  # made by _resolve
            return await self.fallback(*args, **kwargs)

    async def _bounded(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The call's deadline is the smaller of its own timeout and the current deadline (a
        # request's, a fan-out branch's): cut by the latter, it ends in DeadlineExceeded.
        own = self.deadline
        left = time_left()
        bounded_by_work = left is not None and (own is None or left < own)
        timeout = left if bounded_by_work else own
        try:
            if timeout is None:
                return await self._guarded(args, kwargs, None, own=True)
            if bounded_by_work and timeout <= 0:
                raise DeadlineExceeded(f"{self.qualname}: no time left before the call")
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await self._guarded(args, kwargs, scope, own=not bounded_by_work)
            except TimeoutError as exc:
                if bounded_by_work and scope.expired() and not isinstance(exc, DeadlineExceeded):
                    raise DeadlineExceeded(
                        f"{self.qualname}: the deadline of this work passed ({timeout:.3g}s "
                        "were left, under its own timeout)"
                    ) from exc
                raise
        except BaseException as exc:
            if self.breaker is not None:
                claim(exc, self.breaker.name)  # enclosing breakers do not count it
            raise

    async def _guarded(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scope: asyncio.Timeout | None,
        *,
        own: bool,
    ) -> Any:
        breaker = self.breaker
        if breaker is None:
            return await self._attempts(args, kwargs, scope)
        permit = await breaker.admit()
        clock = breaker._clock
        started = clock()
        try:
            result = await self._attempts(args, kwargs, scope)
        except asyncio.CancelledError as cancel:
            record_cut(breaker, permit, cancel, scope, clock() - started, own=own)
            raise
        except Exception as exc:
            await breaker.record_failure(permit, exc, clock() - started)
            raise
        await breaker.record_success(permit, clock() - started)
        return result

    async def _attempts(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], scope: asyncio.Timeout | None
    ) -> Any:
        policy = self.policy
        if policy is None:
            return await self.function(*args, **kwargs)
        return await policy.run(
            self.function,
            args,
            kwargs,
            budget=self.budget,
            remaining=remaining(scope),
            label=self.qualname,
            telemetry=self.retry_telemetry,
        )
