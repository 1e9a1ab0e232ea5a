"""Which store answers the module-level functions: the request's, else the installed one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.flags._context import REQUEST

if TYPE_CHECKING:
    from toolkit.flags._store import FlagStore

_installed: FlagStore | None = None


def current_store() -> FlagStore:
    """The store of the current request, else the one ``install()`` set up last, else an
    in-process store with the declared defaults (created on first use)."""
    global _installed
    request = REQUEST.get()
    if request is not None:
        return request.store
    if _installed is None:
        from toolkit.flags._store import FlagStore

        _installed = FlagStore()
    return _installed


def set_current_store(store: FlagStore) -> None:
    """Make ``store`` answer outside requests (``install()`` does this)."""
    global _installed
    _installed = store
