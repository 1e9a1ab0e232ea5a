"""A settings error in one message: each setting named as the user wrote it (the ``TOOLKIT_*``
variable, the file and table, or the keyword argument), what is wrong with its value in the
field's own unit, and a valid example; a name that is no setting gets the closest one."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from toolkit._duration import format_seconds
from toolkit.errors import ConfigurationError
from toolkit.settings._fields import field_at, is_duration, nested_model
from toolkit.settings._sources import ENV_PREFIX, Origin


def configuration_error(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    style: Literal["env", "argument"],
    origin: Origin | None = None,
) -> ConfigurationError:
    """Turn pydantic's report into one message that names each setting and a fix: the
    ``TOOLKIT_*`` variable, or the file and table when ``origin`` says the value came from
    ``toolkit.toml``, or the keyword argument."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        file = origin.file_for(loc) if origin is not None else None
        name = _setting_name(loc, style, file)
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" {value!r}"
        message = str(error["msg"]).removeprefix("Value error, ")
        example = _example_for(model, error["loc"])
        if error["type"] == "extra_forbidden":
            message, example = _unknown_name(model, loc, style, file)
        elif error["type"] in _BOUNDS:
            message = _bound_message(model, error)
        line = f"{name}{shown}: {message}" if loc else message
        if example is not None:
            line += f" (example: {example})"
        lines.append(line)
    return ConfigurationError("invalid toolkit settings:\n  " + "\n  ".join(lines))


def _example_for(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """Follow ``loc`` through nested models to the field's documented example."""
    field = field_at(model, loc)
    return str(field.examples[0]) if field is not None and field.examples else None


def _setting_name(loc: tuple[str, ...], style: Literal["env", "argument"], file: str | None) -> str:
    entry = " (entry " + ".".join(loc[2:]) + ")" if len(loc) > 2 else ""
    if file is not None:
        return f"{file} [{loc[0]}]" + (f" {loc[1]}" if len(loc) > 1 else "") + entry
    if style == "env":
        return ENV_PREFIX + "__".join(loc[:2]).upper() + entry
    return ".".join(loc) + "="


def _unknown_name(
    model: type[BaseModel],
    loc: tuple[str, ...],
    style: Literal["env", "argument"],
    file: str | None,
) -> tuple[str, str | None]:
    """The message and example for a name that is no field: the closest field instead."""
    parent: type[BaseModel] | None = model
    for part in loc[:-1]:  # fields lead to the next model; dict keys are passed over
        if parent is not None and part in parent.model_fields:
            parent = nested_model(parent.model_fields[part].annotation)
    if parent is None:
        return "names no setting", None
    if file is not None and loc == ("tool",):
        return (
            f"{file} takes the sections at its top level: write [cache], not "
            "[tool.toolkit.cache] (the form of pyproject.toml, which is not read)",
            None,
        )
    close = difflib.get_close_matches(loc[-1], list(parent.model_fields), n=1)
    if not close:
        return f"names no setting; these do: {', '.join(parent.model_fields)}", None
    suggestion = (*loc[:-1], close[0])
    name = _setting_name(suggestion, style, file).removeprefix(f"{file} ")
    return f"names no setting; did you mean {name}?", _example_for(model, suggestion)


_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def _bound_message(model: type[BaseModel], error: Any) -> str:
    """``must be at least 1s``: the bound in the field's own unit."""
    key, words = _BOUNDS[error["type"]]
    bound = error.get("ctx", {}).get(key)
    field = field_at(model, error["loc"])
    duration = field is not None and is_duration(field)
    shown = format_seconds(float(bound)) if duration else str(bound)
    return f"must be {words} {shown}"
