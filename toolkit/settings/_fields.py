"""Finding fields in the settings models: through nested sections and dict entries, under
``Annotated`` and ``| None``, and by their old names."""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from toolkit._deprecated import current_name
from toolkit._duration import parse_seconds


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model ``annotation`` is or holds (a section, an optional one, a dict's entries)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def field_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The field ``loc`` ends at, through nested models and dict entries."""
    current: type[BaseModel] | None = model
    found: FieldInfo | None = None
    for part in loc:
        if current is None or not isinstance(part, str):
            continue
        part = current_name(current, part)
        if part not in current.model_fields:
            continue
        found = current.model_fields[part]
        current = nested_model(found.annotation)
    return found


def is_duration(field: FieldInfo) -> bool:
    """Whether ``field`` holds :data:`Seconds` (``"50ms"``, ``"2s"``), optional or not."""

    def wraps(metadata: Any, annotation: Any) -> bool:
        if any(getattr(item, "func", None) is parse_seconds for item in metadata):
            return True
        inner = get_args(annotation)
        return any(wraps(getattr(arg, "__metadata__", ()), arg) for arg in inner)

    return wraps(field.metadata, field.annotation)


def bare_type(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``| None``."""
    while True:
        if hasattr(annotation, "__metadata__"):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType) and type(None) in get_args(annotation):
            rest = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation
