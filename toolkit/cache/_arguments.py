"""Checks of the caching decorators' arguments, at decoration: ``@cached`` and
``@cache_embeddings`` take a ttl and tags alike and leave a method's receiver out alike, and
``@cached``'s tag functions return tags checked the same way on every call."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Final

from toolkit._duration import parse_seconds
from toolkit.errors import ConfigurationError

MAX_TAGS: Final = 32
"""Tags one entry may be filed under."""
MAX_TAG_LENGTH: Final = 200
"""Characters of one tag: tags are kept per entry and per invalidation, so they are bounded."""


METHOD_RECEIVERS: Final = ("self", "cls")
"""Names of a first parameter that make the decorated function a method: its receiver is no
input of the cached value (not in a key, not the texts of an embedding call)."""


def method_receiver(parameters: Sequence[inspect.Parameter]) -> str | None:
    """The name of the first of ``parameters`` when it is a method's receiver, else None."""
    return parameters[0].name if parameters and parameters[0].name in METHOD_RECEIVERS else None


def parse_ttl(ttl: str | float, decorator: str) -> float:
    """``ttl`` in seconds. Raises ConfigurationError naming ``decorator``."""
    try:
        seconds = parse_seconds(ttl)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{decorator}(ttl={ttl!r}): {exc}; write ttl='10m'") from exc
    if seconds <= 0:
        raise ConfigurationError(
            f"{decorator}(ttl={ttl!r}): the time to live must be positive, e.g. ttl='10m'"
        )
    return seconds


def parse_tags(tags: Sequence[str], decorator: str) -> tuple[str, ...]:
    """``tags`` as a tuple. Raises ConfigurationError naming ``decorator``."""
    problem = tag_problem(tags)
    if problem is not None:
        raise ConfigurationError(f"{decorator}(tags={tags!r}): {problem}, e.g. tags=['intent']")
    return tuple(tags)


def tag_problem(tags: object) -> str | None:
    """What is wrong with ``tags`` as an entry's tags, or None when they are fine."""
    if isinstance(tags, str | bytes) or not isinstance(tags, Sequence):
        return "tags are a list of non-empty strings"
    if len(tags) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags per entry, not {len(tags)}"
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            return "tags are a list of non-empty strings"
        if len(tag) > MAX_TAG_LENGTH:
            return f"a tag has at most {MAX_TAG_LENGTH} characters, not {len(tag)}"
    return None
