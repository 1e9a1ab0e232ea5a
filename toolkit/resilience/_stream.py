"""``@resilient`` on an async generator function: the guard holds until the first chunk.

Until its first chunk a stream is one call: the breaker admits it, the retry policy repeats
it (each attempt a new generator, the failed one closed), ``timeout=`` bounds the time to
that chunk (retries and backoff included, and within the deadline of the current work), and
the fallback answers when that ends in an error. Once a chunk has reached the consumer none
of it applies: a retry or a fallback would send the consumer a second beginning. An error
after the first chunk reaches the consumer and counts as a failure for the breaker (whose
permit is held until the stream ends, its slow-call clock stopped at the first chunk).

The deadline of the current work (``toolkit.deadline``, a request's budget), read at the
call, bounds the whole stream: a chunk it cuts ends the stream with ``DeadlineExceeded``.
Without one the stream runs as long as its consumer reads.

A consumer that stops early (``aclose()``, leaving its ``async for``, a cancellation) closes
the underlying generator at once; that is no failure. Values sent in with ``asend()`` are not
passed on: a stream is read, not driven.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

from opentelemetry import metrics, trace

from toolkit._deadlines import bounded, expires_at
from toolkit._fallback import mark_fallback
from toolkit._version import __version__
from toolkit.errors import DeadlineExceeded
from toolkit.flags import RESILIENCE, current_flags
from toolkit.resilience._nesting import claim
from toolkit.resilience._scope import record_cut, remaining
from toolkit.resilience._telemetry import FallbackTelemetry
from toolkit.resilience.breaker import CircuitBreaker, Permit
from toolkit.resilience.classify import error_type
from toolkit.resilience.registry import current_breakers
from toolkit.telemetry import names

if TYPE_CHECKING:
    from toolkit.resilience.decorator import _Guard

_NOTHING: Final = object()
"""No chunk (yet): the stream ended before its first one, or the fallback answers."""


class _Opened(NamedTuple):
    source: AsyncIterator[Any]
    first: Any
    permit: Permit
    admitted: float


class StreamTelemetry:
    """The time to first chunk and the duration of one function's streams."""

    __slots__ = ("_attributes", "_duration", "_first", "_outcomes", "label")

    def __init__(self, label: str, meter_provider: metrics.MeterProvider | None) -> None:
        self.label = label
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._first = names.RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK_METRIC.create(meter)
        self._duration = names.RESILIENCE_STREAM_DURATION_METRIC.create(meter)
        self._attributes = {names.RESILIENCE_FUNCTION: label}
        self._outcomes = {
            outcome: {names.RESILIENCE_FUNCTION: label, names.RESILIENCE_STREAM_OUTCOME: outcome}
            for outcome in names.RESILIENCE_STREAM_OUTCOMES
        }

    def first_chunk(self, started: float) -> None:
        self._first.record(time.monotonic() - started, self._attributes)

    def ended(self, outcome: str, started: float) -> None:
        self._duration.record(time.monotonic() - started, self._outcomes[outcome])

    def interrupted(self, chunks: int, error: BaseException) -> None:
        """Put on the current span that the stream failed past the point of retrying."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.RESILIENCE_STREAM_INTERRUPTED_EVENT,
                {
                    names.RESILIENCE_FUNCTION: self.label,
                    names.RESILIENCE_STREAM_CHUNKS: chunks,
                    names.ERROR_TYPE: error_type(error),
                },
            )


def fallback_problem(fallback: Callable[..., Any]) -> str | None:
    """Why ``fallback`` cannot answer for a stream, or None."""
    if inspect.isasyncgenfunction(fallback) or inspect.iscoroutinefunction(fallback):
        return None
    return "an async generator function, or an async function returning an iterable"


def stream_wrapper(guard: _Guard) -> Callable[..., AsyncGenerator[Any, None]]:
    """The async generator function that runs ``guard.function``'s streams (see the module)."""

    async def resilient_stream(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        if not (guard.flags or current_flags()).is_enabled(RESILIENCE):
            async with contextlib.aclosing(guard.function(*args, **kwargs)) as bare:
                async for chunk in bare:
                    yield chunk
            return
        registry = current_breakers()
        if registry is not guard.registry:
            guard._resolve(registry)
        telemetry = cast(StreamTelemetry, guard.stream_telemetry)  # made by _resolve
        started = time.monotonic()
        at = expires_at()
        breaker = guard.breaker
        permit: Permit = None
        admitted = 0.0
        try:
            source, chunk, permit, admitted = await _open(guard, args, kwargs)
        except asyncio.CancelledError:
            telemetry.ended(names.STREAM_CLOSED, started)
            raise
        except Exception as exc:
            if guard.fallback is None:
                telemetry.ended(names.STREAM_FAILED, started)
                raise
            mark_fallback()
            cast(FallbackTelemetry, guard.fallback_telemetry).answered(exc)  # made by _resolve
            source, chunk, breaker = _fallback_chunks(guard.fallback, args, kwargs), _NOTHING, None
            fell_back = True
        else:
            fell_back = False
        outcome = names.STREAM_FALLBACK if fell_back else names.STREAM_CLOSED
        first_at: float | None = None  # on the breaker's clock: its slow-call judgement
        failure: BaseException | None = None
        chunks = 0
        try:
            while True:
                if chunk is _NOTHING:
                    try:
                        chunk = await _next(source, at)
                    except StopAsyncIteration:
                        if not fell_back:
                            outcome = names.STREAM_COMPLETE
                        return
                    except Exception as exc:
                        if not fell_back:
                            outcome, failure = names.STREAM_INTERRUPTED, exc
                            telemetry.interrupted(chunks, exc)
                        raise
                if not chunks:
                    telemetry.first_chunk(started)
                    if breaker is not None:
                        first_at = breaker._clock()
                chunks += 1
                yield chunk
                chunk = _NOTHING
        finally:
            try:
                await _close(source)
            finally:
                telemetry.ended(outcome, started)
                if breaker is not None:
                    seconds = (breaker._clock() if first_at is None else first_at) - admitted
                    await _settle(breaker, permit, outcome, failure, seconds)

    return resilient_stream


async def _settle(
    breaker: CircuitBreaker,
    permit: Permit,
    outcome: str,
    failure: BaseException | None,
    seconds: float,
) -> None:
    """Tell the breaker how the stream it admitted ended, ``seconds`` to its first chunk."""
    if outcome == names.STREAM_COMPLETE:
        await breaker.record_success(permit, seconds)
    elif failure is not None:
        await breaker.record_failure(permit, failure, seconds)
        claim(failure, breaker.name)  # enclosing breakers do not count it
    else:
        breaker.record_cancelled(permit)  # closed early: neither failure nor success


async def _open(guard: _Guard, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Opened:
    """The stream and its first chunk (or :data:`_NOTHING` for an empty stream), under the
    breaker, the retries and ``timeout=``; the breaker's permit, held until it ends, and the
    breaker's time at its admission."""
    breaker = guard.breaker
    timeout = bounded(guard.deadline)
    own = timeout == guard.deadline  # else the current deadline is sooner than its own
    try:
        if timeout is None:
            return await _admitted(guard, args, kwargs, None, own=own)
        async with asyncio.timeout(timeout) as scope:
            return await _admitted(guard, args, kwargs, scope, own=own)
    except BaseException as exc:
        if breaker is not None:
            claim(exc, breaker.name)  # enclosing breakers do not count it
        raise


async def _admitted(
    guard: _Guard,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    scope: asyncio.Timeout | None,
    *,
    own: bool,
) -> _Opened:
    breaker = guard.breaker
    function = guard.function

    async def attempt(*args: Any, **kwargs: Any) -> tuple[AsyncIterator[Any], Any]:
        source = function(*args, **kwargs)
        try:
            return source, await anext(source)
        except StopAsyncIteration:
            return source, _NOTHING
        except BaseException:
            await _close(source)
            raise

    policy = guard.policy
    permit = None if breaker is None else await breaker.admit()
    clock = time.monotonic if breaker is None else breaker._clock
    started = clock()
    try:
        if policy is None:
            source, first = await attempt(*args, **kwargs)
        else:
            source, first = await policy.run(
                attempt,
                args,
                kwargs,
                budget=guard.budget,
                remaining=remaining(scope),
                label=guard.qualname,
                telemetry=guard.retry_telemetry,
            )
    except asyncio.CancelledError as cancel:
        if breaker is not None:
            record_cut(breaker, permit, cancel, scope, clock() - started, own=own)
        raise
    except Exception as exc:
        if breaker is not None:
            await breaker.record_failure(permit, exc, clock() - started)
        raise
    return _Opened(source, first, permit, started)


async def _next(source: AsyncIterator[Any], at: float | None) -> Any:
    """The next chunk, by the deadline ``at`` (``time.monotonic()``) when there is one."""
    if at is None:
        return await anext(source)
    scope = asyncio.timeout(max(0.0, at - time.monotonic()))
    try:
        async with scope:
            return await anext(source)
    except TimeoutError:
        if scope.expired():
            raise DeadlineExceeded("the deadline of this work passed during the stream") from None
        raise


async def _close(source: AsyncIterator[Any]) -> None:
    closer = getattr(source, "aclose", None)
    if closer is not None:
        await closer()


async def _fallback_chunks(
    fallback: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncGenerator[Any, None]:
    """The fallback's chunks: an async generator function's, or those of the iterable (sync
    or async) an async function returns."""
    if inspect.isasyncgenfunction(fallback):
        async with contextlib.aclosing(fallback(*args, **kwargs)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    answer: Iterable[Any] | AsyncIterable[Any] = await fallback(*args, **kwargs)
    if isinstance(answer, AsyncIterable):
        async for chunk in answer:
            yield chunk
    else:
        for chunk in answer:
            yield chunk
