"""The ``admin`` section: the admin routes' tokens and mount path."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from toolkit.settings._section import Section
from toolkit.settings._values import Path


class AdminSettings(Section):
    """Admin routes (flag API and page): mounted only when at least one token is configured."""

    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Token name -> token. Changes are recorded with the token's name.",
        examples=['{"ops": "a-long-random-string"}'],
    )
    path: Path = Field("/_toolkit", description="Where the admin routes are mounted.")

    @field_validator("tokens")
    @classmethod
    def _long_enough(cls, tokens: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, token in tokens.items():
            if len(token.get_secret_value()) < 16:
                raise ValueError(f"token {name!r} is shorter than 16 characters")
        return tokens
