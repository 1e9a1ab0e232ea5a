"""The pydantic-ai versions this plugin supports (its README says the same)."""

from __future__ import annotations

from typing import Final

SUPPORTED: Final = "pydantic-ai-slim >=2.59,<3"
"""The distribution and range; make test runs the newest, make test-plugins the lowest."""
