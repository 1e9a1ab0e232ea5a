"""The ``admin`` section: the admin routes' tokens (full and read-only) and mount path."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from toolkit.settings._section import Section
from toolkit.settings._values import Path


class AdminSettings(Section):
    """Admin routes (flag API, flags and status pages, ``/stats``): mounted only when at least
    one token, of either kind, is configured."""

    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Token name -> token, with every right. Changes are recorded with the "
        "token's name.",
        examples=['{"ops": "a-long-random-string"}'],
    )
    read_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Token name -> token that reads (the pages, /stats, flags, history) and "
        "changes nothing.",
        examples=['{"oncall": "another-long-random-string"}'],
    )
    path: Path = Field("/_toolkit", description="Where the admin routes are mounted.")

    @field_validator("tokens", "read_tokens")
    @classmethod
    def _long_enough(cls, tokens: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, token in tokens.items():
            if len(token.get_secret_value()) < 16:
                raise ValueError(f"token {name!r} is shorter than 16 characters")
        return tokens

    @model_validator(mode="after")
    def _one_role_per_name(self) -> AdminSettings:
        both = sorted(self.tokens.keys() & self.read_tokens.keys())
        if both:
            raise ValueError(
                f"token name {both[0]!r} is in both admin.tokens and admin.read_tokens; a name "
                "has one role: rename one of them"
            )
        return self

    @property
    def any_token(self) -> bool:
        """Whether a token of either kind is configured (the admin routes are mounted)."""
        return bool(self.tokens or self.read_tokens)
