"""Where settings come from besides keyword arguments: ``TOOLKIT_*`` variables and the TOML
file (``toolkit.toml``, or the path in ``TOOLKIT_CONFIG``); what is wrong with a file that is
not TOML; and, for an error, which of the sources gave a value."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from pydantic_settings import BaseSettings, TomlConfigSettingsSource

from toolkit.errors import ConfigurationError

ENV_PREFIX = "TOOLKIT_"
CONFIG_FILE_ENV = "TOOLKIT_CONFIG"
DEFAULT_CONFIG_FILE = "toolkit.toml"


def config_file() -> str:
    return os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)


def file_source(settings_cls: type[BaseSettings]) -> TomlConfigSettingsSource:
    """The TOML file's values, read now.

    Raises:
        ConfigurationError: ``TOOLKIT_CONFIG`` names no file, or the file is not TOML.
    """
    path = config_file()
    if path != DEFAULT_CONFIG_FILE and not os.path.isfile(path):
        raise ConfigurationError(
            f"{CONFIG_FILE_ENV}={path!r}: no such file. Point it at a TOML file such as "
            "'toolkit.toml', or unset it."
        )
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(_toml_error(path, exc)) from None


def _toml_error(path: str, exc: ValueError) -> str:
    """``toolkit.toml, line 3, column 9: <what is wrong>`` and what TOML looks like."""
    text = str(exc)
    # Python 3.14 gives lineno/colno/msg; earlier versions only the message.
    position = re.search(r" \(at line (\d+), column (\d+)\)$", text)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if line is None and position is not None:
        line, column, text = int(position[1]), int(position[2]), text[: position.start()]
    where = f"{path}, line {line}, column {column}" if line is not None else path
    if isinstance(exc, UnicodeDecodeError):
        text = "not UTF-8 text"
    return (
        f"{where}: {getattr(exc, 'msg', text)}; the file is TOML with one table per section, "
        'e.g. [ratelimit] then limit = "60/minute" on the next line'
    )


class Origin:
    """Which source gave the value at a location: a keyword argument, a ``TOOLKIT_*``
    variable, or the TOML file (the lowest precedence: only what the others did not set)."""

    def __init__(self, values: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self._values = values
        self._variables = {name.upper() for name in environ}
        self._path = config_file()
        self._toml: dict[str, Any] | None = None

    def file_for(self, loc: tuple[str, ...]) -> str | None:
        """The config file's path when the value at ``loc`` came from it, else None."""
        if not loc or loc[0] in self._values:
            return None
        prefix = ENV_PREFIX + "__".join(loc[:2]).upper()
        if any(v == prefix or v.startswith(prefix + "__") for v in self._variables):
            return None
        if len(loc) > 1 and ENV_PREFIX + loc[0].upper() in self._variables:
            return None
        table: Any = self._read()
        for part in loc[:2]:
            if not isinstance(table, dict) or part not in table:
                return None
            table = table[part]
        return self._path

    def _read(self) -> dict[str, Any]:
        if self._toml is None:
            try:
                with open(self._path, "rb") as file:
                    self._toml = tomllib.load(file)
            except OSError:
                self._toml = {}
        return self._toml
