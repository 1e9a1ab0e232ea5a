"""Feature flags: every capability asks one per request and, when off, steps aside.

This is the small interface the middlewares depend on. For now the only source is
:class:`StaticFlags`, fixed at startup from settings; the live flag system implements the same
``is_enabled`` so nothing that asks changes.
"""

from toolkit.flags._static import RATELIMIT, TRACING, FlagSource, StaticFlags

__all__ = ["RATELIMIT", "TRACING", "FlagSource", "StaticFlags"]
