"""Renamed public names: the old name keeps working and warns, naming the new one.

For arguments (:func:`renamed_argument`, and :func:`keyword_only` for those no longer taken
by position), module attributes (:func:`renamed_attributes`, and :func:`moved_attributes` for
those now in another module) and settings fields (:class:`Renamed`, in every source:
``TOOLKIT_*`` variables, ``toolkit.toml`` and keyword arguments alike).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ValidationError, model_validator

from toolkit._default import DEFAULT
from toolkit.errors import ConfigurationError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now ``new``: a ``DeprecationWarning``, by default at the line that
    called the caller of this function (the one that used the old name)."""
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel)


def renamed_argument(where: str, old: str, given: Any, new: str, value: T) -> T:
    """The value of argument ``new``, or of ``old`` (its old name: a warning) when only that
    one was given (``new`` left at None or ``DEFAULT``); ``where`` names the callable in the
    messages.

    Raises:
        ConfigurationError: both were given.
    """
    if given is None:
        return value
    if value is not None and value is not DEFAULT:
        raise ConfigurationError(
            f"{where}: {old}= and {new}= are one argument ({old}= is its old name); pass {new}="
        )
    warn_renamed(f"{old}= of {where}", f"{new}=", stacklevel=4)
    return cast(T, given)


def keyword_only(where: str, *names: str) -> Callable[[F], F]:
    """Decorate a function whose parameters ``names`` are keyword-only now: given by position
    after the positional ones (their old places, in this order), they still work, with a
    warning. ``inspect.signature`` and type checkers see the keyword-only signature."""

    def decorate(function: F) -> F:
        parameters = inspect.signature(function).parameters.values()
        positional = sum(1 for p in parameters if p.kind in _POSITIONAL)

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            extra = args[positional:]
            if extra and len(extra) <= len(names):
                given = names[: len(extra)]
                for name, value in zip(given, extra, strict=True):
                    if name in kwargs:
                        raise TypeError(f"{where}() got multiple values for argument {name!r}")
                    kwargs[name] = value
                warn_renamed(
                    f"{where}() with {', '.join(given)} by position",
                    f"{'=, '.join(given)}= (keyword-only)",
                )
                args = args[:positional]
            return function(*args, **kwargs)

        return cast(F, call)

    return decorate


def renamed_attributes(module: str, renamed: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each old name of ``renamed`` (old -> new name and
    value; a new name with a dot is a whole path, ``toolkit.DEFAULT``), with a warning; any
    other name is missing as usual."""

    def __getattr__(name: str) -> Any:
        if name not in renamed:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, value = renamed[name]
        warn_renamed(f"{module}.{name}", new if "." in new else f"{module}.{new}")
        return value

    return __getattr__


def moved_attributes(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each name of ``moved`` (name -> the module it lives
    in now, imported when the name is first asked for: that module may import this one),
    with a warning naming its new place; any other name is missing."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(f"{module}.{name}", f"{moved[name]}.{name}")
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__


class Renamed(property):
    """The old name of a field of a :class:`RenamedFields` model, ``old = Renamed("new")``:
    accepted wherever the model is validated and read as an attribute, with a warning."""

    def __init__(self, new: str) -> None:
        self.new = new
        super().__init__(self._read)

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner.__name__
        self.old = name

    def _read(self, model: BaseModel) -> Any:
        warn_renamed(f"{self.owner}.{self.old}", f"{self.owner}.{self.new}")
        return getattr(model, self.new)


class RenamedFields(BaseModel):
    """A model whose fields may have old names (:class:`Renamed` attributes)."""

    renamed: ClassVar[Mapping[str, str]] = {}
    """Old field name -> new one, from the model's :class:`Renamed` attributes."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.renamed = {
            name: value.new for name, value in vars(cls).items() if isinstance(value, Renamed)
        }

    @model_validator(mode="wrap")
    @classmethod
    def _accept_renamed(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        """Read an old name as its new one, warning; errors name the one that was given."""
        used = {
            old: new for old, new in cls.renamed.items() if isinstance(data, dict) and old in data
        }
        if not used:
            return handler(data)
        for old, new in used.items():
            if new in data:
                raise ValueError(
                    f"{old} and {new} are one setting ({old} is its old name); keep {new}"
                )
            warn_renamed(
                f"{cls.__name__}.{old}",
                f"{cls.__name__}.{new} (TOOLKIT_* variables, toolkit.toml and keyword "
                "arguments alike)",
                stacklevel=4,
            )
        try:
            return handler({used.get(name, name): value for name, value in data.items()})
        except ValidationError as exc:
            given: dict[int | str, str] = {new: old for old, new in used.items()}
            errors: list[Any] = []
            for error in exc.errors():
                loc = error["loc"]
                if loc:
                    loc = (given.get(loc[0], loc[0]), *loc[1:])
                errors.append({**error, "loc": loc})
            raise ValidationError.from_exception_data(exc.title, errors) from None


def current_name(model: type[BaseModel], name: str) -> str:
    """The name of ``model``'s field now, when ``name`` is an old one."""
    renamed: Mapping[str, str] = getattr(model, "renamed", {})
    return renamed.get(name, name)
