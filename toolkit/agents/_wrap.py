"""A function of any kind run inside a span: sync, async, generator, async generator.

``open_run(args, kwargs)`` starts the span (or returns None: telemetry is off, the function
runs bare). The span is current while the function's own code runs, and only then: a
generator's span is attached around each resumption and detached at each ``yield``, so the
caller's code between two items is not inside it. A generator's span ends when it is
exhausted, raises, or is closed (``close()``/``aclose()``, or dropped and collected), never
at its first ``yield``; closing early is not an error.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol, TypeVar, cast

from opentelemetry import context
from opentelemetry.context import Context

F = TypeVar("F", bound=Callable[..., Any])


class Run(Protocol):
    context: Context

    def end(self, error: BaseException | None) -> None: ...


Opener = Callable[[tuple[Any, ...], dict[str, Any]], Run | None]


def wrap(function: F, open_run: Opener) -> F:
    """``function`` with each call inside the run ``open_run`` starts."""
    if inspect.isasyncgenfunction(function):
        return cast(F, _async_generator(function, open_run))
    if inspect.isgeneratorfunction(function):
        return cast(F, _generator(function, open_run))
    if inspect.iscoroutinefunction(function):
        return cast(F, _coroutine(function, open_run))
    return cast(F, _plain(function, open_run))


def _plain(function: Callable[..., Any], open_run: Opener) -> Callable[..., Any]:
    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Any:
        run = open_run(args, kwargs)
        if run is None:
            return function(*args, **kwargs)
        token = context.attach(run.context)
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:
            context.detach(token)
            run.end(exc)
            raise
        context.detach(token)
        run.end(None)
        return result

    return traced


def _coroutine(function: Callable[..., Any], open_run: Opener) -> Callable[..., Any]:
    @functools.wraps(function)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        run = open_run(args, kwargs)
        if run is None:
            return await function(*args, **kwargs)
        token = context.attach(run.context)
        try:
            result = await function(*args, **kwargs)
        except BaseException as exc:
            context.detach(token)
            run.end(exc)
            raise
        context.detach(token)
        run.end(None)
        return result

    return traced


def _generator(function: Callable[..., Any], open_run: Opener) -> Callable[..., Any]:
    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        run = open_run(args, kwargs)
        inner = function(*args, **kwargs)
        if run is None:
            return (yield from inner)
        error: BaseException | None = None
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = context.attach(run.context)
                try:
                    item = inner.send(sent) if thrown is None else inner.throw(thrown)
                except StopIteration as stop:
                    return stop.value
                finally:
                    context.detach(token)
                thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    token = context.attach(run.context)
                    try:
                        inner.close()
                    finally:
                        context.detach(token)
                    raise
                except BaseException as exc:  # thrown in by the caller: the generator's own
                    thrown, sent = exc, None
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            run.end(error)

    return traced


def _async_generator(function: Callable[..., Any], open_run: Opener) -> Callable[..., Any]:
    @functools.wraps(function)
    async def traced(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        run = open_run(args, kwargs)
        inner = function(*args, **kwargs)
        error: BaseException | None = None
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = None if run is None else context.attach(run.context)
                try:
                    item = await (inner.asend(sent) if thrown is None else inner.athrow(thrown))
                except StopAsyncIteration:
                    return
                finally:
                    if token is not None:
                        context.detach(token)
                thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    token = None if run is None else context.attach(run.context)
                    try:
                        await inner.aclose()
                    finally:
                        if token is not None:
                            context.detach(token)
                    raise
                except BaseException as exc:  # thrown in by the caller: the generator's own
                    thrown, sent = exc, None
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if run is not None:
                run.end(error)

    return traced
