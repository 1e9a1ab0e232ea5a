"""The public surface of every package is exactly what its ``__init__`` lists in ``__all__``,
and every name listed is documented in docs/."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types
from pathlib import Path
from typing import Any

import pytest

import toolkit

DOCS = Path(__file__).resolve().parents[2] / "docs"


def packages() -> list[Any]:
    """``toolkit`` and each of its public subpackages."""
    found = [toolkit]
    for info in pkgutil.walk_packages(toolkit.__path__, "toolkit."):
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            found.append(importlib.import_module(info.name))
    return found


PACKAGES = packages()
IDS = [package.__name__ for package in PACKAGES]


def public_names(package: Any) -> set[str]:
    """What ``dir()`` offers as the package's own: no submodule, no ``__future__`` feature."""
    return {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and type(value).__module__ != "__future__"  # from __future__ import annotations
    }


def exported(package: Any) -> list[str]:
    return [name for name in package.__all__ if name != "__version__"]


def code_in_docs() -> str:
    """The code of every docs page: fenced blocks and inline code spans."""
    code = []
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        code += re.findall(r"```.*?```", text, flags=re.DOTALL)
        code += re.findall(r"`[^`]+`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    return "\n".join(code)


@pytest.mark.parametrize("package", PACKAGES, ids=IDS)
def test_all_lists_every_public_name_and_nothing_else(package: Any) -> None:
    """Nothing leaks (an import the package uses for itself) and nothing is forgotten."""
    assert hasattr(package, "__all__"), f"{package.__name__} has no __all__"
    listed = set(exported(package))
    public = public_names(package)
    assert not public - listed, f"{package.__name__} leaks {sorted(public - listed)}"
    assert not listed - public, f"{package.__name__} lists missing {sorted(listed - public)}"
    assert len(package.__all__) == len(listed | ({"__version__"} & set(package.__all__)))


@pytest.mark.parametrize("package", PACKAGES, ids=IDS)
def test_every_public_name_has_a_docstring(package: Any) -> None:
    """Every class and function (type aliases and constants are documented in docs/)."""
    missing = [
        name
        for name in exported(package)
        if inspect.isclass(value := getattr(package, name)) or inspect.isfunction(value)
        if not value.__doc__
    ]
    assert not missing, f"no docstring in {package.__name__}: {missing}"


@pytest.mark.parametrize("package", PACKAGES, ids=IDS)
def test_every_public_name_appears_in_the_docs(package: Any) -> None:
    """Each exported name is in the code of some docs page (a block or a code span)."""
    code = code_in_docs()
    missing = [n for n in exported(package) if not re.search(rf"\b{re.escape(n)}\b", code)]
    assert not missing, f"{package.__name__}: not documented in docs/: {missing}"
