"""The public surface is exactly what toolkit/__init__.py lists, and every name is documented."""

from __future__ import annotations

import types
from pathlib import Path

import toolkit

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_all_lists_every_public_name_and_nothing_else() -> None:
    public = {
        name
        for name, value in vars(toolkit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(toolkit.__all__) - {"__version__"} == public


def test_every_public_name_has_a_docstring() -> None:
    for name in toolkit.__all__:
        if name != "__version__":
            assert getattr(toolkit, name).__doc__, f"toolkit.{name} has no docstring"


def test_every_public_name_appears_in_the_docs() -> None:
    text = "\n".join(page.read_text() for page in DOCS.glob("*.md"))
    missing = [n for n in toolkit.__all__ if n != "__version__" and n not in text]
    assert not missing, f"not documented in docs/: {missing}"
