"""The ``gen_ai.conversation.id`` of an agent run: an argument of the call, or a function of
its arguments, worked out at decoration."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

from toolkit.errors import ConfigurationError

MAX_CONVERSATION_ID: Final = 256
"""Characters of a conversation id kept on the span."""

ConversationSpec = str | Callable[..., object]
"""The name of the decorated function's parameter holding the conversation id, or a function
called with the call's arguments that returns it (None: the run has none)."""

Reader = Callable[[tuple[Any, ...], dict[str, Any]], str | None]


def conversation_reader(function: Callable[..., Any], spec: ConversationSpec) -> Reader:
    """How a call's arguments give its conversation id (a string of at most
    :data:`MAX_CONVERSATION_ID` characters, or None). The reader may raise (a user function,
    an object whose ``str()`` fails): the caller guards it.

    Raises:
        ConfigurationError: ``spec`` names no parameter of ``function`` that takes one value.
    """
    if callable(spec):

        def from_function(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
            return as_conversation_id(spec(*args, **kwargs))

        return from_function
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"conversation={spec!r}: the name of a parameter (e.g. 'session_id') or a function "
            "of the call's arguments"
        )
    qualname = getattr(function, "__qualname__", repr(function))
    parameters = list(inspect.signature(function).parameters.values())
    found = [p for p in parameters if p.name == spec]
    if not found or found[0].kind in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ):
        names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ConfigurationError(
            f"conversation={spec!r}: {qualname} has no such parameter; one of {names}, or a "
            "function of the call's arguments"
        )
    parameter = found[0]
    index = (
        parameters.index(parameter)
        if parameter.kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        else None
    )
    by_keyword = parameter.kind is not inspect.Parameter.POSITIONAL_ONLY
    default = None if parameter.default is inspect.Parameter.empty else parameter.default

    def from_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if by_keyword and spec in kwargs:
            return as_conversation_id(kwargs[spec])
        if index is not None and index < len(args):
            return as_conversation_id(args[index])
        return as_conversation_id(default)

    return from_argument


def as_conversation_id(value: object) -> str | None:
    """``value`` as a conversation id: None stays None, anything else its ``str()``, cut."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_CONVERSATION_ID] if text else None
