"""``@feature``: choose between a new and an old implementation by flag, per request."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from toolkit.flags._registry import declare
from toolkit.flags._source import current_flags

P = ParamSpec("P")
R = TypeVar("R")


def feature(
    key: str, *, fallback: Callable[P, R], description: str = ""
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function while flag ``key`` is on for the current request's caller,
    and ``fallback`` (same signature) while it is off.

        @toolkit.feature("agent.prompt-v2", fallback=answer_with_prompt_v1)
        async def answer_with_prompt_v2(question: str) -> str: ...

    Declares ``key`` as a boolean flag, ``off`` by default: roll it out to a share of users
    (sticky per caller) with ``agent-toolkit flags rollout agent.prompt-v2 on 10``, and back
    with ``agent-toolkit flags set agent.prompt-v2 off``. The choice is made at each call,
    from the snapshot the request started with.
    """
    declare(key, description=description)

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def choose_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                chosen = function if current_flags().is_enabled(key) else fallback
                return await cast(Any, chosen(*args, **kwargs))

            return cast(Callable[P, R], choose_async)

        @functools.wraps(function)
        def choose(*args: P.args, **kwargs: P.kwargs) -> R:
            chosen = function if current_flags().is_enabled(key) else fallback
            return chosen(*args, **kwargs)

        return choose

    return decorate
