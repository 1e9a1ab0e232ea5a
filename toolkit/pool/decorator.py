"""``@pooled(pool)``: run a function with an object lent by a pool as its first argument."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Concatenate, ParamSpec, TypeVar

from toolkit.errors import ConfigurationError
from toolkit.pool.pool import AgentPool

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def pooled(
    pool: AgentPool[T], *, key: Callable[..., Hashable] | None = None
) -> Callable[[Callable[Concatenate[T, P], Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Lend ``pool``'s object to each call, as the function's first argument:

        @toolkit.pooled(pool, key=lambda question, model="small": model)
        async def answer(agent: Agent, question: str, model: str = "small") -> str:
            return (await agent.run(question)).output

        await answer("why?", model="large")        # the caller never passes the agent

    The decorated function no longer has that first parameter, for callers, mypy and
    FastAPI alike (its ``__signature__`` leaves it out), so it can be a route. The object is
    given back when the call returns, raises or is cancelled, as with ``pool.acquire()``.

    Args:
        pool: the pool that lends the object.
        key: called with the call's arguments (the first one left out), returns the pool
            key; the default key when None.

    Raises:
        ConfigurationError: at decoration, for a function that is not ``async def`` or has
            no positional first parameter to receive the object.
    """
    if not isinstance(pool, AgentPool):
        raise ConfigurationError(
            f"@pooled({pool!r}): pass the AgentPool, e.g. @toolkit.pooled(pool)"
        )
    if key is not None and not callable(key):
        raise ConfigurationError(
            f"@pooled(key={key!r}): a function of the call's arguments returning the pool "
            "key, e.g. key=lambda question, model: model"
        )

    def decorate(
        function: Callable[Concatenate[T, P], Awaitable[R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        qualname = getattr(function, "__qualname__", repr(function))
        if not inspect.iscoroutinefunction(function):
            raise ConfigurationError(
                f"@pooled needs an async function (async def): {qualname} is not"
            )
        signature = inspect.signature(function)
        parameters = list(signature.parameters.values())
        if not parameters or parameters[0].kind not in _POSITIONAL:
            raise ConfigurationError(
                f"@pooled passes the pooled object as the first argument, but {qualname} has "
                "no positional first parameter: async def answer(agent, question): ..."
            )

        if key is None:

            @functools.wraps(function)
            async def with_pooled(*args: P.args, **kwargs: P.kwargs) -> R:
                async with pool.acquire() as obj:
                    return await function(obj, *args, **kwargs)

        else:
            choose = key

            @functools.wraps(function)
            async def with_pooled(*args: P.args, **kwargs: P.kwargs) -> R:
                async with pool.acquire(choose(*args, **kwargs)) as obj:
                    return await function(obj, *args, **kwargs)

        with_pooled.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=parameters[1:]
        )
        return with_pooled

    return decorate
