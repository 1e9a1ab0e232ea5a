"""The process-wide instance of one kind that ``install()`` sets up: the flag store, the cache
store, the breaker registry. Code that runs without ``install()`` (a script, a test, a
decorated function called before startup) gets an in-process one, made on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Current(Generic[T]):
    """The instance ``set()`` last (``install()`` sets it), else ``default()``, made once on
    first use and kept."""

    __slots__ = ("_default", "_value")

    def __init__(self, default: Callable[[], T]) -> None:
        self._default = default
        self._value: T | None = None

    def get(self) -> T:
        value = self._value
        if value is None:
            value = self._value = self._default()
        return value

    def set(self, value: T | None) -> None:
        """Make ``value`` the current one; None goes back to a default made on next use."""
        self._value = value
