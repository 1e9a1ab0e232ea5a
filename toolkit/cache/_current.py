"""Which cache store the decorators use: the one install() set up, else an in-process one."""

from __future__ import annotations

from toolkit.backends import MemoryBackend
from toolkit.cache._store import CacheStore

_installed: CacheStore | None = None


def current_cache() -> CacheStore:
    """The store ``install()`` set up last, else an in-process one (created on first use), so
    decorated functions work before, and without, ``install()``."""
    global _installed
    if _installed is None:
        _installed = CacheStore(MemoryBackend())
    return _installed


def set_current_cache(store: CacheStore | None) -> None:
    """Make ``store`` the one the decorators and ``invalidate()`` use (``install()`` does)."""
    global _installed
    _installed = store
