"""Test overrides: variants served in the current context above every other source."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

OVERRIDES: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "toolkit_flags_overrides", default=None
)


@contextlib.contextmanager
def override(values: Mapping[str, str | bool]) -> Iterator[None]:
    """Serve these variants in the current context (a test, or a request inside it), above
    every other source. ``True`` and ``False`` stand for ``on`` and ``off``.

        with toolkit.flags.override({"ratelimit": "off", "agent.prompt-v2": True}):
            ...
    """
    current = OVERRIDES.get() or {}
    named = {k: ("on" if v else "off") if isinstance(v, bool) else v for k, v in values.items()}
    token = OVERRIDES.set({**current, **named})
    try:
        yield
    finally:
        OVERRIDES.reset(token)
