"""``DEFAULT``: the one sentinel of the public API, "the configured value".

An option whose default is configured (a field of the ``settings=`` section a class takes, the
``resilience`` settings) or follows from other arguments (an AgentPool's ``size`` by its mode)
defaults to ``DEFAULT``, so that ``None`` never has to mean "the setting": where an option
takes None, None means none, off or never. See docs/api.md.

``NOT_YET`` is the toolkit's own marker, never an argument: a value not computed yet, where
None is a value it may compute.
"""

from __future__ import annotations

import enum
from typing import Final


class Default(enum.Enum):
    """The type of :data:`DEFAULT`, for annotations: ``timeout: float | Default | None``."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = Default.DEFAULT
"""The configured value of an option: the settings' field, else its documented default."""


class NotYet(enum.Enum):
    """The type of :data:`NOT_YET`."""

    NOT_YET = "NOT_YET"


NOT_YET: Final = NotYet.NOT_YET
"""A value not computed yet (None being one it may compute); internal."""
