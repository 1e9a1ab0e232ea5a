"""The ``TOOLKIT_*`` variables checked before pydantic-settings reads them, against the root
model: one that names no setting (pydantic-settings ignores it) is refused with the closest
one that does, and one that a list, dict or section reads and that is not JSON (which it
reports by its section only) is refused by its own name."""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from toolkit._deprecated import current_name
from toolkit.errors import ConfigurationError
from toolkit.settings._fields import bare_type, nested_model
from toolkit.settings._sources import CONFIG_FILE_ENV, ENV_PREFIX


def _is_complex(annotation: Any) -> bool:
    """Whether pydantic-settings reads a variable for this field as JSON."""
    core = bare_type(annotation)
    if isinstance(core, type) and issubclass(core, BaseModel):
        return True
    return get_origin(core) in (list, dict, set, frozenset, tuple)


def variable_field(root: type[BaseModel], name: str) -> FieldInfo | None:
    """The field of ``root`` a ``TOOLKIT_*`` variable sets (for an entry of a dict, the dict's
    field), or None when it names no setting. Case does not matter, as for pydantic-settings."""
    upper = name.upper()
    if not upper.startswith(ENV_PREFIX):
        return None
    parts = upper.removeprefix(ENV_PREFIX).lower().split("__")
    if "" in parts:
        return None
    annotation: Any = root  # what the next part selects in
    field: FieldInfo | None = None
    for part in parts:
        core = bare_type(annotation)
        if get_origin(core) is dict:  # the part is a key, any text; then its value's type
            annotation = get_args(core)[1]
            continue
        if not (isinstance(core, type) and issubclass(core, BaseModel)):
            return None  # nothing nests in a scalar
        field = core.model_fields.get(current_name(core, part))
        if field is None:
            return None
        annotation = field.annotation
    return field


def _variables(root: type[BaseModel]) -> list[str]:
    """Every ``TOOLKIT_<SECTION>`` and ``TOOLKIT_<SECTION>__<FIELD>`` name, and the file's."""
    names = [CONFIG_FILE_ENV]
    for section, info in root.model_fields.items():
        names.append(ENV_PREFIX + section.upper())
        nested = nested_model(info.annotation)
        for field in nested.model_fields if nested is not None else ():
            names.append(f"{ENV_PREFIX}{section.upper()}__{field.upper()}")
    return names


def _example_assignment(root: type[BaseModel], name: str) -> str | None:
    """``NAME=<a valid value>``, shell-quoted, from the field's example or default."""
    field = variable_field(root, name)
    if field is None:
        return None
    if field.examples:
        value = str(field.examples[0])
    elif isinstance(field.default, bool):
        value = str(field.default).lower()
    elif isinstance(field.default, str | int | float):
        value = str(field.default)
    else:
        return None
    return f"{name}={shlex.quote(value)}"


def check_environment(root: type[BaseModel], environ: Mapping[str, str]) -> None:
    """Refuse the ``TOOLKIT_*`` variables of ``environ`` that name no setting of ``root``
    (naming the closest one) and those a list, dict or section reads that are not JSON.

    Raises:
        ConfigurationError: naming each such variable and a valid example.
    """
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_FILE_ENV:
            continue
        field = variable_field(root, name)
        if field is None:
            close = difflib.get_close_matches(upper, _variables(root), n=1, cutoff=0.6)
            line = f"{name} names no setting"
            if close:
                line += f"; did you mean {close[0]}?"
                example = _example_assignment(root, close[0])
                if example is not None:
                    line += f" (example: {example})"
            else:
                line += (
                    f"; settings are {ENV_PREFIX}<SECTION>__<FIELD>, with the sections "
                    + ", ".join(s.upper() for s in root.model_fields)
                )
            lines.append(line)
        elif upper.count("__") <= 1 and _is_complex(field.annotation):
            try:
                json.loads(environ[name])
            except ValueError:
                kind = "list" if get_origin(bare_type(field.annotation)) is list else "object"
                line = f"{name} {environ[name]!r}: is not JSON; this setting is a JSON {kind}"
                example = _example_assignment(root, upper)
                if example is not None:
                    line += f" (example: {example})"
                lines.append(line)
    if lines:
        raise ConfigurationError("invalid toolkit settings:\n  " + "\n  ".join(lines))
