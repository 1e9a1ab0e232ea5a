"""A settings section with a constructor's options over it, the options defaulting to ``DEFAULT``.

``DEFAULT`` leaves a field to the section; any other value, None included, sets it. None sets
a field only where None is one of its values (``limit=None``: no default limit); elsewhere it
is the old spelling of ``DEFAULT`` ("the setting"), still accepted with a warning.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from toolkit._default import DEFAULT
from toolkit._deprecated import warn_renamed
from toolkit.settings._section import with_arguments

SectionT = TypeVar("SectionT", bound=BaseModel)


def configured(
    where: str,
    section: type[SectionT],
    settings: SectionT | None,
    options: Mapping[str, Any],
    *,
    beneath: Mapping[str, Any] | None = None,
) -> SectionT:
    """``settings`` (the section's defaults when None), then ``beneath`` (its values that are
    not None), then the ``options`` given (see :func:`chosen`), validated as one; errors name
    the argument."""
    given = chosen(where, section, options, stacklevel=5)
    merged = with_arguments(section, settings, beneath or {}, given)  # leaves out every None
    nulled = {name: None for name, value in given.items() if value is None}
    return merged.model_copy(update=nulled) if nulled else merged


def chosen(
    where: str, section: type[BaseModel], options: Mapping[str, Any], *, stacklevel: int = 4
) -> dict[str, Any]:
    """The ``options`` of constructor ``where`` that set a field of ``section``: not
    ``DEFAULT``, and not a None the field cannot take (that one warns: it is the old spelling
    of ``DEFAULT``)."""
    given = {}
    for name, value in options.items():
        if value is DEFAULT:
            continue
        if value is None and not _takes_none(section, name):
            warn_renamed(
                f"{where}({name}=None)",
                f"{name}=toolkit.DEFAULT, or leave it out",
                stacklevel=stacklevel,
            )
            continue
        given[name] = value
    return given


def _takes_none(section: type[BaseModel], name: str) -> bool:
    annotation = section.model_fields[name].annotation
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return False
    return type(None) in typing.get_args(annotation)
