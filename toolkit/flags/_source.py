"""What the capabilities ask of flags (:class:`FlagSource`), and the module-level questions
``toolkit.flags.is_enabled`` / ``variant`` / ``evaluate``, put to the current store."""

from __future__ import annotations

from typing import Protocol

from toolkit.flags._current import current_store
from toolkit.flags._model import Evaluation


class FlagSource(Protocol):
    """What the capabilities ask, per request, from memory: :class:`FlagStore`, or the
    OpenFeature adapter that reads another provider."""

    def evaluate(self, key: str, *, caller: str | None = None) -> Evaluation: ...

    def variant(self, key: str, *, caller: str | None = None) -> str: ...

    def is_enabled(self, key: str, *, caller: str | None = None) -> bool: ...


# ``subject=`` is the old name of ``caller=``, deprecated: the store warns.


def evaluate(key: str, *, caller: str | None = None, subject: str | None = None) -> Evaluation:
    """Flag ``key`` for ``caller`` (an identity; the current request's caller when None):
    variant, value, reason."""
    return current_store().evaluate(key, caller=caller, subject=subject)


def is_enabled(key: str, *, caller: str | None = None, subject: str | None = None) -> bool:
    """Whether boolean flag ``key`` is on for ``caller`` (the current request's when None)."""
    return current_store().is_enabled(key, caller=caller, subject=subject)


def variant(key: str, *, caller: str | None = None, subject: str | None = None) -> str:
    """The variant of flag ``key`` for ``caller`` (the current request's when None)."""
    return current_store().variant(key, caller=caller, subject=subject)
