"""Which ``@resilient`` call an error already belongs to, when calls are nested.

A ``@resilient`` call with a breaker claims what leaves it: its final error, or the
cancellation that cut it. An enclosing ``@resilient`` call then neither counts it against its
own breaker nor retries it. An embedding API failing inside a vector store's call is the
embedding breaker's business: counted again, it opened the store's breaker too and every
search lost its results; retried again, it multiplied the inner call's attempts.
"""

from __future__ import annotations

import contextlib
from typing import Final

from toolkit.errors import CircuitOpenError

_CLAIM: Final = "_toolkit_breaker"
_CAUSES: Final = 8
"""How far ``raise ... from`` chains are followed."""


def claim(exc: BaseException, breaker: str) -> None:
    """Mark ``exc`` as leaving the call guarded by ``breaker`` (the innermost one keeps it)."""
    if getattr(exc, _CLAIM, None) is None:
        # An exception type that takes no attributes stays unclaimed.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _CLAIM, breaker)


def claimed_by(exc: BaseException) -> str | None:
    """The breaker that ``exc`` (or the error it was raised from) already belongs to: the one
    whose call it left, or the one that refused (a CircuitOpenError); None when it is new."""
    seen: BaseException | None = exc
    for _ in range(_CAUSES):
        if seen is None:
            return None
        if isinstance(seen, CircuitOpenError):
            return seen.breaker
        owner = getattr(seen, _CLAIM, None)
        if isinstance(owner, str):
            return owner
        seen = seen.__cause__
    return None
