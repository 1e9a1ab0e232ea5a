"""The ``flags`` section and the flags it declares."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from toolkit._deprecated import Renamed
from toolkit.identity import CLIENT
from toolkit.settings._section import Section
from toolkit.settings._values import CallerSetting, Seconds


class FlagDeclarationSettings(Section):
    """An application flag declared in configuration rather than in code."""

    variants: dict[str, Any] | None = Field(
        None,
        description="Variant name -> value; a boolean on/off flag when unset.",
        examples=['{"small": "gpt-4o-mini", "large": "gpt-4o"}'],
    )
    default: str | None = Field(None, description="Variant served until an operator changes it.")
    description: str = Field("", description="One line for the admin page and the CLI.")


class FlagsSettings(Section):
    """Feature flags: where overrides live, who a rollout buckets, how often to resync."""

    caller: CallerSetting = Field(
        CLIENT,
        description="Whom percentage rollouts bucket by: client, api_key or header:<Name>.",
        examples=["header:X-User-Id"],
    )
    subject = Renamed("caller")
    defaults: dict[str, str] = Field(
        default_factory=dict,
        description="Flag key -> variant served when no override is stored.",
        examples=['{"agent.prompt-v2": "on"}'],
    )
    declare: dict[str, FlagDeclarationSettings] = Field(
        default_factory=dict,
        description="Application flags declared here instead of in code.",
        examples=['{"agent.model": {"variants": {"small": 1, "large": 2}, "default": "small"}}'],
    )
    resync_interval: Seconds = Field(
        10.0,
        ge=1,
        le=600,
        description="Seconds between full reloads, the safety net behind pub/sub. 1s to 10m: "
        "each reload reads every override from the backend; a change pub/sub missed waits "
        "this long.",
        examples=["10s"],
    )
    source: Literal["toolkit", "openfeature"] = Field(
        "toolkit",
        description="toolkit: the toolkit's own store; openfeature: the app's OpenFeature client.",
    )
