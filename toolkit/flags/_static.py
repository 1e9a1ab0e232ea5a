from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from toolkit.settings import ToolkitSettings

RATELIMIT: Final = "ratelimit"
"""Flag gating the rate limiter: off lets every request through unchecked."""
TRACING: Final = "tracing"
"""Flag gating the HTTP telemetry middleware: off means no span and no HTTP metrics."""


class FlagSource(Protocol):
    """Answers, from memory and without I/O, whether a flag is on for a request."""

    def is_enabled(self, name: str, *, subject: str | None = None) -> bool:
        """Whether flag ``name`` is on; ``subject`` (a hashed user, key or address) keeps
        percentage rollouts sticky in sources that support them."""
        ...


class StaticFlags:
    """Flags fixed for the life of the process; a flag it does not know is on."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, bool] | None = None) -> None:
        self._values: dict[str, bool] = dict(values or {})

    @classmethod
    def from_settings(cls, settings: ToolkitSettings) -> StaticFlags:
        """Each capability's flag takes its default from that capability's ``enabled``."""
        return cls({RATELIMIT: settings.ratelimit.enabled, TRACING: settings.telemetry.enabled})

    def is_enabled(self, name: str, *, subject: str | None = None) -> bool:
        del subject  # static flags are the same for everyone
        return self._values.get(name, True)

    def __repr__(self) -> str:
        return f"StaticFlags({self._values!r})"
