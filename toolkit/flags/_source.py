"""What the capabilities ask of flags (:class:`FlagSource`), which source answers them
(:func:`current_flags`), and the module-level questions ``toolkit.flags.is_enabled`` /
``variant`` / ``evaluate``, put to that source."""

from __future__ import annotations

from typing import Protocol

from toolkit._deprecated import renamed_argument
from toolkit.flags._current import current_store
from toolkit.flags._model import Evaluation


class FlagSource(Protocol):
    """What the capabilities ask, per request, from memory: :class:`FlagStore`, or the
    OpenFeature adapter that reads another provider."""

    def evaluate(self, key: str, *, caller: str | None = None) -> Evaluation: ...

    def variant(self, key: str, *, caller: str | None = None) -> str: ...

    def is_enabled(self, key: str, *, caller: str | None = None) -> bool: ...


_installed: FlagSource | None = None


def current_flags() -> FlagSource:
    """What answers flag questions when no ``flags=`` was given: the source ``install()`` set
    up for ``flags.source = "openfeature"``, else :func:`current_store`."""
    return _installed or current_store()


def set_current_flags(source: FlagSource | None) -> None:
    """Make ``source`` answer instead of the current store; None goes back to the store
    (``install()`` does this)."""
    global _installed
    _installed = source


# ``subject=`` is the old name of ``caller=``, deprecated.
_WHERE = "toolkit.flags.evaluate/variant/is_enabled"


def evaluate(key: str, *, caller: str | None = None, subject: str | None = None) -> Evaluation:
    """Flag ``key`` for ``caller`` (an identity; the current request's caller when None):
    variant, value, reason."""
    caller = renamed_argument(_WHERE, "subject", subject, "caller", caller)
    return current_flags().evaluate(key, caller=caller)


def is_enabled(key: str, *, caller: str | None = None, subject: str | None = None) -> bool:
    """Whether boolean flag ``key`` is on for ``caller`` (the current request's when None)."""
    caller = renamed_argument(_WHERE, "subject", subject, "caller", caller)
    return current_flags().is_enabled(key, caller=caller)


def variant(key: str, *, caller: str | None = None, subject: str | None = None) -> str:
    """The variant of flag ``key`` for ``caller`` (the current request's when None)."""
    caller = renamed_argument(_WHERE, "subject", subject, "caller", caller)
    return current_flags().variant(key, caller=caller)
