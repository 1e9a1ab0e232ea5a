"""What a flag is, what an operator stores about it, and what one evaluation answers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from toolkit.errors import ConfigurationError

ON: Final = "on"
OFF: Final = "off"
SHADOW: Final = "shadow"
BOOLEAN: Final[Mapping[str, Any]] = {ON: True, OFF: False}

# Evaluation reasons, as the OpenTelemetry feature-flag conventions name them.
DEFAULT: Final = "default"
"""No operator override: the declared default."""
STATIC: Final = "static"
"""An operator set the variant for everyone (or a test overrode it for this request)."""
SPLIT: Final = "split"
"""A percentage rollout placed the caller (hashed) inside or outside."""
STALE: Final = "stale"
"""The store cannot reach its backend: the last known value, possibly out of date."""
ERROR: Final = "error"
"""The flag is not declared; the answer is ``off`` / the fallback."""

BUCKETS: Final = 10_000
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class FlagDefinition:
    """A flag the toolkit or the application declared.

    Attributes:
        key: lower case, dots and dashes allowed: ``ratelimit``, ``agent.prompt-v2``.
        variants: variant name -> value. Boolean flags have ``on`` -> True, ``off`` -> False.
        default: the variant served when no operator has said otherwise.
        description: one line for the admin page and ``agent-toolkit flags list``.
        capability: a toolkit kill switch (these add span events only when overridden).
    """

    key: str
    variants: Mapping[str, Any] = field(default_factory=lambda: dict(BOOLEAN))
    default: str = OFF
    description: str = ""
    capability: bool = False

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ConfigurationError(
                f"flag key {self.key!r} is invalid; use lower case letters, digits, '.', '-' "
                "and '_', such as 'agent.prompt-v2'"
            )
        if self.default not in self.variants:
            raise ConfigurationError(
                f"flag {self.key!r}: default {self.default!r} is not one of its variants "
                f"{sorted(self.variants)}"
            )

    def to_json(self) -> str:
        return json.dumps(
            {
                "variants": dict(self.variants),
                "default": self.default,
                "description": self.description,
                "capability": self.capability,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, key: str, text: str) -> FlagDefinition:
        data = json.loads(text)
        return cls(
            key,
            dict(data["variants"]),
            str(data["default"]),
            str(data.get("description", "")),
            bool(data.get("capability", False)),
        )


@dataclass(frozen=True, slots=True)
class Rollout:
    """``variant`` for ``percentage`` % of callers, the flag's ``variant`` for the others."""

    variant: str
    percentage: float


@dataclass(frozen=True, slots=True)
class FlagState:
    """What an operator stored about a flag; absent means the declared default."""

    variant: str
    rollout: Rollout | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"variant": self.variant}
        if self.rollout is not None:
            data["rollout"] = {
                "variant": self.rollout.variant,
                "percentage": self.rollout.percentage,
            }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FlagState:
        data = json.loads(text)
        rollout = data.get("rollout")
        return cls(
            variant=str(data["variant"]),
            rollout=Rollout(str(rollout["variant"]), float(rollout["percentage"]))
            if rollout
            else None,
        )

    def check(self, definition: FlagDefinition) -> None:
        """Refuse a state that names a variant the flag does not have."""
        named = [self.variant] + ([self.rollout.variant] if self.rollout else [])
        for variant in named:
            if variant not in definition.variants:
                raise ConfigurationError(
                    f"flag {definition.key!r} has no variant {variant!r}; its variants are "
                    f"{sorted(definition.variants)}"
                )
        if self.rollout is not None and not 0 <= self.rollout.percentage <= 100:
            raise ConfigurationError(
                f"flag {definition.key!r}: a rollout percentage is between 0 and 100, "
                f"got {self.rollout.percentage}"
            )


class Evaluation(NamedTuple):
    """One answer: the variant, its value, and why (an OpenTelemetry reason)."""

    key: str
    variant: str
    value: Any
    reason: str


def bucket(key: str, caller: str) -> int:
    """The place of ``caller`` (an identity such as ``api_key:...``), 0 to 9,999,
    in flag ``key``'s rollouts.

    Salted with the key so one caller's place differs between flags; stable across processes
    and releases, so a caller inside a rollout at 10 % is still inside at 20 %.
    """
    digest = hashlib.blake2b(f"{key}\x00{caller}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS
