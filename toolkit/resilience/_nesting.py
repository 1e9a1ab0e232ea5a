"""Which ``@resilient`` call an error already belongs to, when calls are nested.

A ``@resilient`` call with a breaker claims what leaves it: its final error, or the
cancellation that cut it. An enclosing call's breaker then does not count it as a failure of
its own dependency. An embedding API failing inside a vector store's call is the embedding
breaker's business: counted again, it opened the store's breaker too, and every search lost
its results.

An error that went through a retry loop is marked as retried, and enclosing retry loops do
not repeat it: retried at two layers, 3 attempts become 9.
"""

from __future__ import annotations

import contextlib
from typing import Final

from toolkit.errors import CircuitOpenError

_CLAIM: Final = "_toolkit_breaker"
_RETRIED: Final = "_toolkit_retried"
_CAUSES: Final = 8
"""How far ``raise ... from`` chains are followed."""


def _mark(exc: BaseException, attribute: str, value: object) -> None:
    if getattr(exc, attribute, None) is None:
        # An exception type that takes no attributes stays unmarked.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, attribute, value)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from (``raise ... from``), nearest first."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < _CAUSES:
        chain.append(seen)
        seen = seen.__cause__
    return chain


def claim(exc: BaseException, breaker: str) -> None:
    """``exc`` leaves the call guarded by ``breaker`` (the innermost breaker keeps it)."""
    _mark(exc, _CLAIM, breaker)


def claimed_by(exc: BaseException) -> str | None:
    """The breaker that ``exc`` (or the error it was raised from) already belongs to: the one
    whose call it left, or the one that refused (a CircuitOpenError); None when it is new."""
    for seen in _chain(exc):
        if isinstance(seen, CircuitOpenError):
            return seen.breaker
        owner = getattr(seen, _CLAIM, None)
        if isinstance(owner, str):
            return owner
    return None


def mark_retried(exc: BaseException) -> None:
    """``exc`` ends a retry loop: it was retried as often as its policy and budget allowed."""
    _mark(exc, _RETRIED, True)


def already_retried(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it was raised from) ended an inner retry loop, or is a
    breaker's refusal (which a backoff's wait does not change)."""
    return any(
        isinstance(seen, CircuitOpenError) or getattr(seen, _RETRIED, False) is True
        for seen in _chain(exc)
    )
