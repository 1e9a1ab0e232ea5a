"""The public API keeps its types through the decorators, under mypy --strict."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]


def test_decorated_functions_keep_their_signatures_for_type_checkers() -> None:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(ROOT / "tests" / "typing" / "api.py"),
        ]
    )
    assert status == 0, stdout + stderr
