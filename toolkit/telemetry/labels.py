"""Bounded metric labels: the first values seen are kept, every later one is ``other``.

Model, provider, agent and step names reach metrics from code and from providers' answers
(``gpt-4o-2024-08-06``); a fleet of fine-tuned models or names built per request would make a
series each, and the Python SDK has no cardinality limit of its own. Spans keep every name.
"""

from __future__ import annotations

from typing import Final

from toolkit.telemetry import names

MAX_LABEL_LENGTH: Final = 128
"""Characters of a label value (and of a name in a span name); longer ones are cut."""


class BoundedLabels:
    """The label value of each name: itself (cut to :data:`MAX_LABEL_LENGTH`) while fewer
    than ``limit`` distinct values were seen, ``other`` after."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self._seen:
            return name
        label = name[:MAX_LABEL_LENGTH]
        if label in self._seen:
            return label
        if len(self._seen) >= self._limit:
            return names.GEN_AI_OTHER
        self._seen.add(label)
        return label
