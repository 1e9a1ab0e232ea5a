"""The before/after table every demo prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure of each phase, printed with ``digits`` decimals."""

    label: str
    before: float
    after: float
    unit: str = ""
    digits: int = 0


def comparison(rows: Sequence[Row], *, phases: tuple[str, str] = ("before", "after")) -> list[str]:
    """``rows`` as aligned lines: label, unit, the two phases and the change (after / before)."""
    width = max([len(row.label) for row in rows] + [6]) + 2
    unit_width = max([len(row.unit) for row in rows] + [4]) + 2
    lines = [f"{'':<{width}}{'':<{unit_width}}{phases[0]:>10}{phases[1]:>10}{'change':>10}"]
    for row in rows:
        lines.append(
            f"{row.label:<{width}}{row.unit:<{unit_width}}"
            f"{_number(row.before, row.digits):>10}{_number(row.after, row.digits):>10}"
            f"{_change(row.before, row.after):>10}"
        )
    return lines


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _change(before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after):
        return ""
    if before == 0:
        return "=" if after == 0 else "new"
    return f"x{after / before:.2f}"
