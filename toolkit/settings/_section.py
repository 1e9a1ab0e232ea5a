"""The base of every settings section, and the ways a section is built other than from the
sources: from a constructor's keyword arguments (:func:`validate_arguments`,
:func:`with_arguments`), or derived from another section (:func:`overrides_of`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from toolkit._deprecated import RenamedFields
from toolkit.settings._errors import configuration_error

SectionT = TypeVar("SectionT", bound=BaseModel)


class Section(RenamedFields):
    """A settings section: unknown fields refused, values frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_arguments(section: type[SectionT], values: dict[str, Any]) -> SectionT:
    """Build a settings section from keyword arguments; errors name the argument."""
    try:
        return section.model_validate(values)
    except ValidationError as exc:
        raise configuration_error(exc, section, style="argument") from None


def with_arguments(
    section: type[SectionT], settings: SectionT | None, *arguments: Mapping[str, Any]
) -> SectionT:
    """``settings`` (the section's defaults when None) with the values of ``arguments`` that
    are not None over it, each mapping over the ones before, validated as one; errors name
    the argument.

    Only the fields ``settings`` was given are carried over, the others defaulting again: a
    field's meaning may depend on whether it was set (a cached route's ``methods``), which a
    full dump would lose by setting them all."""
    given = {
        name: value for layer in arguments for name, value in layer.items() if value is not None
    }
    if settings is not None and not given:
        return settings
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    return validate_arguments(section, {**base, **given})


def overrides_of(section: type[BaseModel], name: str, *, over: str, doc: str) -> type[Section]:
    """A section named ``name`` with the fields of ``section``, each optional: None (unset)
    leaves the value ``over.<field>`` gives. Types, bounds and examples are the same; each
    description says what it overrides. Only fields are carried (no validator, no old name).
    """
    hints = get_type_hints(section, include_extras=True)
    fields: dict[str, Any] = {}
    for field, info in section.model_fields.items():
        hint = hints[field]
        # Field(ge=..., le=...) bounds: pydantic keeps them beside the type's own metadata
        # (the validator of Seconds), which stays inside the optional type.
        own = getattr(hint, "__metadata__", ())
        bounds = tuple(item for item in info.metadata if item not in own)
        optional: Any = hint | None
        annotation = Annotated[(optional, *bounds)] if bounds else optional
        description = f"Overrides {over}.{field}: {info.description}"
        fields[field] = (annotation, Field(None, description=description, examples=info.examples))
    return create_model(
        name, __base__=Section, __doc__=doc, __module__=section.__module__, **fields
    )
