"""What a cached value cost to compute: the model calls made while computing it.

Shared by the agent layer, which notes each model call as it ends (``note_call``), and the
caches, which collect the calls of a computation (``collecting()``) to store them with the
entry and count them as saved on every later hit (``toolkit.cache.saved.*``). It lives apart
from both so neither imports the other, as ``_fallback.py`` does for fallback answers.

A tally is a few integers: at most :data:`MAX_MODELS` models, the rest added under ``other``.
Nested computations (a cached function calling another) each collect every call made inside
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

MAX_MODELS: Final = 4
"""Models one tally tells apart, ``other`` included: an entry rarely needs more than its chat
and embedding models."""
MAX_MODEL_LENGTH: Final = 128
OTHER: Final = "other"


class Tally:
    """Per model: ``[calls, input tokens, output tokens]``."""

    __slots__ = ("models",)

    def __init__(self, models: dict[str, list[int]] | None = None) -> None:
        self.models: dict[str, list[int]] = models if models is not None else {}

    def __bool__(self) -> bool:
        return bool(self.models)

    def add(self, model: str, calls: int, input_tokens: int, output_tokens: int) -> None:
        if model not in self.models and len(self.models) >= MAX_MODELS - 1:
            model = OTHER  # the last place is kept for every model past the first ones
        counts = self.models.setdefault(model, [0, 0, 0])
        counts[0] += calls
        counts[1] += input_tokens
        counts[2] += output_tokens


_COLLECTING: ContextVar[tuple[Tally, ...]] = ContextVar("toolkit_savings", default=())


@contextmanager
def collecting(tally: Tally | None = None) -> Iterator[Tally]:
    """Collect the model calls made inside the block (and in tasks it starts), into
    ``tally`` when given (a stream collects a chunk at a time into one), else a new one."""
    tally = Tally() if tally is None else tally
    token = _COLLECTING.set((*_COLLECTING.get(), tally))
    try:
        yield tally
    finally:
        _COLLECTING.reset(token)


def note_call(model: str, input_tokens: int, output_tokens: int) -> None:
    """A model call ended: add it to every computation collecting around it."""
    tallies = _COLLECTING.get()
    if tallies:
        model = model[:MAX_MODEL_LENGTH]
        for tally in tallies:
            tally.add(model, 1, input_tokens, output_tokens)
