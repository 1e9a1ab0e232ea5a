"""The ``ratelimit`` section and its per-route policies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from toolkit._deprecated import Renamed
from toolkit.identity import CLIENT, DEFAULT_PROXY_HEADER, IPNetwork
from toolkit.settings._section import Section
from toolkit.settings._values import (
    Algorithm,
    CallerSetting,
    FailureMode,
    HeaderStyle,
    Path,
    ProxyHeaderSetting,
    RateLimitString,
    cost_problem,
    parse_rate_limits,
)


class RoutePolicySettings(Section):
    """A rate-limit policy for the routes one pattern matches."""

    limit: RateLimitString = Field(examples=["10/minute;100/day"])
    cost: int = Field(
        1,
        ge=1,
        description="Units each request consumes: at least 1, and at most the smallest amount "
        "of its limit, or no request could ever pass.",
        examples=["5"],
    )
    caller: CallerSetting | None = Field(
        None, description="Overrides the default caller.", examples=["api_key"]
    )
    key = Renamed("caller")
    methods: list[str] | None = Field(
        None, description="Only these HTTP methods; all when unset.", examples=['["POST"]']
    )
    failure: FailureMode | None = Field(
        None, description="Overrides the default failure mode.", examples=["closed"]
    )
    shadow: bool | None = Field(None, description="Overrides the default shadow mode.")

    @field_validator("cost")
    @classmethod
    def _cost_within_limit(cls, cost: int, info: ValidationInfo) -> int:
        limit = info.data.get("limit")  # absent when invalid: reported on its own
        problem = None if limit is None else cost_problem(cost, parse_rate_limits(limit))
        if problem is not None:
            raise ValueError(problem)
        return cost


def _policy_from_string(value: Any) -> Any:
    # A bare limit string is shorthand for a policy with only that limit.
    return {"limit": value} if isinstance(value, str) else value


RoutePolicy = Annotated[RoutePolicySettings, BeforeValidator(_policy_from_string)]


class RateLimitSettings(Section):
    """Rate limiting: which requests are limited, how, and by whom."""

    enabled: bool = Field(True, description="Default of the 'ratelimit' flag.")
    limit: RateLimitString | None = Field(
        None,
        description="Limit applied to every route without its own policy; none when unset.",
        examples=["60/minute;1000/day"],
    )
    algorithm: Algorithm = Field(
        "gcra", description="gcra, fixed-window, moving-window or sliding-window-counter."
    )
    caller: CallerSetting = Field(
        CLIENT,
        description="Whose budget a request spends: client, api_key or header:<Name>.",
        examples=["header:X-API-Key"],
    )
    key = Renamed("caller")
    trusted_proxies: list[IPNetwork] = Field(
        default_factory=list,
        description="Proxy addresses (CIDRs) whose proxy_header is believed.",
        examples=['["10.0.0.0/8"]'],
    )
    proxy_header: ProxyHeaderSetting = Field(
        DEFAULT_PROXY_HEADER,
        description="The header the trusted proxies write the client address in: "
        "x-forwarded-for, forwarded (RFC 7239) or x-real-ip. The other two are ignored.",
        examples=["forwarded"],
    )
    routes: dict[Path, RoutePolicy] = Field(
        default_factory=dict,
        description="Per-route policies: route template or path pattern -> limit or policy.",
        examples=['{"/chat/{session}": "10/minute"}'],
    )
    exempt: list[Path] = Field(
        default_factory=lambda: ["/health", "/healthz", "/livez", "/readyz"],
        description="Paths never limited (patterns allowed).",
        examples=['["/health", "/static/*"]'],
    )
    failure: FailureMode = Field(
        "open", description="When the backend fails: open (allow) or closed (503)."
    )
    shadow: bool = Field(False, description="Evaluate and record, never reject.")
    headers: HeaderStyle = Field(
        "ietf",
        description="Response headers: ietf (RateLimit-*), legacy (X-RateLimit-*), both, none.",
    )
