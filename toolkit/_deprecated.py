"""Renamed public names: the old name keeps working and warns, naming the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from toolkit.errors import ConfigurationError

T = TypeVar("T")


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now ``new``: a ``DeprecationWarning``, by default at the line that
    called the caller of this function (the one that used the old name)."""
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel)


def renamed_argument(where: str, old: str, given: T, new: str, value: T) -> T:
    """The value of argument ``new``, or of ``old`` (its old name: a warning) when only that
    one was given; ``where`` names the callable in the messages.

    Raises:
        ConfigurationError: both were given.
    """
    if given is None:
        return value
    if value is not None:
        raise ConfigurationError(
            f"{where}: {old}= and {new}= are one argument ({old}= is its old name); pass {new}="
        )
    warn_renamed(f"{old}= of {where}", f"{new}=", stacklevel=4)
    return given


def renamed_attributes(module: str, renamed: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each old name of ``renamed`` (old -> new name and
    value), with a warning; any other name is missing as usual."""

    def __getattr__(name: str) -> Any:
        if name not in renamed:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, value = renamed[name]
        warn_renamed(f"{module}.{name}", f"{module}.{new}")
        return value

    return __getattr__
