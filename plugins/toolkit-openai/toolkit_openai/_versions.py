"""The OpenAI SDK versions this plugin supports (its README says the same)."""

from __future__ import annotations

from typing import Final

SUPPORTED: Final = "openai >=1.66,<4"
"""The distribution and range; make test runs the newest, make test-openai-lowest the lowest."""
