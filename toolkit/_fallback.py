"""A value computed with a fallback's help is not kept.

``@resilient`` calls :func:`mark_fallback` when its fallback answers instead of the
dependency. A cache computes a value inside :func:`computing` and stores it only if no
fallback answered within: a canned "try again later" stored for ten minutes would outlive the
outage by ten minutes, and hide the dependency's recovery from every caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar


class Computation:
    """One value being computed; ``fallback`` turns True if a fallback answered within."""

    __slots__ = ("fallback", "parent")

    def __init__(self, parent: Computation | None) -> None:
        self.parent = parent
        self.fallback = False


_current: ContextVar[Computation | None] = ContextVar("toolkit_computation", default=None)


def mark_fallback() -> None:
    """The value being computed (and every one it is part of) came from a fallback."""
    computation = _current.get()
    while computation is not None:
        computation.fallback = True
        computation = computation.parent


@contextlib.contextmanager
def computing() -> Iterator[Computation]:
    """Compute a value inside; afterwards its ``fallback`` says whether to keep it."""
    computation = begin()
    with resumed(computation):
        yield computation


def begin() -> Computation:
    """A computation inside the current one, not current yet: a stream computes its value a
    chunk at a time, each inside :func:`resumed` (never across a ``yield``, where the
    consumer's own code runs)."""
    return Computation(_current.get())


@contextlib.contextmanager
def resumed(computation: Computation) -> Iterator[None]:
    """Make ``computation`` the current one inside the block."""
    token = _current.set(computation)
    try:
        yield
    finally:
        _current.reset(token)
