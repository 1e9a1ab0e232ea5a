"""Which store answers the module-level functions: the request's, else the installed one."""

from __future__ import annotations

from toolkit._current import Current
from toolkit.flags._store import REQUEST, FlagStore

INSTALLED: Current[FlagStore] = Current(FlagStore)
"""The store ``install()`` set up last, else an in-process one with the declared defaults."""


def current_store() -> FlagStore:
    """The store of the current request, else the one ``install()`` set up last, else an
    in-process store with the declared defaults (created on first use)."""
    request = REQUEST.get()
    if request is not None:
        return request.store
    return INSTALLED.get()


def set_current_store(store: FlagStore) -> None:
    """Make ``store`` answer outside requests (``install()`` does this)."""
    INSTALLED.set(store)
