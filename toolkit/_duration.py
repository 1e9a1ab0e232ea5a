"""Durations written the way people write them in settings: ``"50ms"``, ``"2s"``, ``"10m"``."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_seconds(value: str | float | int) -> float:
    """Return ``value`` in seconds; a bare number is already seconds.

    Raises:
        ValueError: the text is not a non-negative number with an optional unit
            (ms, s, m, h, d), such as ``"50ms"`` or ``"2.5s"``.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '50ms' or '2s', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; write it like '50ms', '2s' or '10m'")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration; write it like '50ms', '2s' or '10m'")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def format_seconds(seconds: float) -> str:
    """``seconds`` in the largest unit that writes it exactly: ``0.1`` -> ``"100ms"``,
    ``600`` -> ``"10m"``; what :func:`parse_seconds` reads back to the same value."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        count = seconds / size
        if count >= 1 and math.isclose(count, round(count), abs_tol=1e-9):
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"
