"""The ``resilience`` section (circuit breakers, retries, deadlines) and the settings of one
named breaker, derived from the section's breaker fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from toolkit.settings._section import Section, overrides_of
from toolkit.settings._values import Seconds, check_breaker_name


class BreakerFields(Section):
    """What every circuit breaker is set by: the ``resilience`` section gives them to all,
    ``resilience.breakers.<name>`` (:class:`BreakerSettings`) to one."""

    failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of failed calls in the window that opens a breaker.",
        examples=["0.5"],
    )
    minimum_calls: int = Field(
        20,
        ge=1,
        le=1000000,
        description="Calls in the window before a rate counts (fleet-wide on Redis). 1 to 1000000.",
        examples=["20"],
    )
    window: Seconds = Field(
        60.0,
        ge=0.1,
        le=86400,
        description="Length of the sliding window of outcomes. 100ms to 1d.",
        examples=["60s"],
    )
    open_duration: Seconds = Field(
        30.0,
        ge=0.1,
        le=86400,
        description="First open period; doubled at each trip in a row, up to max_open_duration. "
        "100ms to 1d.",
        examples=["30s"],
    )
    max_open_duration: Seconds = Field(
        300.0,
        ge=0.1,
        le=86400,
        description="Cap of the open period's backoff. 100ms to 1d.",
        examples=["5m"],
    )
    probes: int = Field(
        3,
        ge=1,
        le=1000,
        description="Probe calls let through in half-open, for the whole fleet; all must "
        "succeed to close. 1 to 1000.",
        examples=["3"],
    )
    probe_timeout: Seconds = Field(
        120.0,
        ge=0.1,
        le=86400,
        description="A probe not reported within this is presumed lost and its permit freed. "
        "100ms to 1d.",
        examples=["2m"],
    )


_BREAKER_DOC = """One named breaker's settings (``resilience.breakers.<name>``): the fields of
:class:`BreakerFields`, each optional; what is unset comes from the ``resilience`` section.
Arguments in code still win over both."""

if TYPE_CHECKING:

    class BreakerSettings(Section):
        # What mypy sees: the fields are made at run time, below.
        def __getattr__(self, name: str) -> float | None: ...

else:
    BreakerSettings = overrides_of(
        BreakerFields, "BreakerSettings", over="resilience", doc=_BREAKER_DOC
    )


class ResilienceSettings(BreakerFields):
    """Defaults of circuit breakers, retries and deadlines (``@toolkit.resilient``). Each
    breaker and decorator may override them in its arguments."""

    flush_interval: Seconds = Field(
        1.0,
        ge=0.1,
        le=60,
        description="How often each instance adds its successes to the shared window (and "
        "re-reads breaker states). 100ms (each flush is a backend write) to 1m.",
        examples=["1s"],
    )
    timeout: Seconds | None = Field(
        120.0,
        ge=0.001,
        le=86400,
        description="Default deadline of a @resilient call, backoff included; null for none. "
        "1ms to 1d.",
        examples=["30s"],
    )
    retry_budget: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Retries may be at most this share of the calls of the last "
        "retry_budget_window...",
        examples=["0.2"],
    )
    retry_budget_minimum: int = Field(
        10,
        ge=0,
        le=10000,
        description="...plus this many a second, always allowed (so a quiet service is not "
        "starved). 0 to 10000.",
        examples=["10"],
    )
    retry_budget_window: Seconds = Field(
        10.0,
        ge=1,
        le=600,
        description="Over how long calls and retries count. 1s to 10m.",
        examples=["10s"],
    )
    # Names are checked by a validator rather than an annotated key type: pydantic-settings
    # 2.4 (the lowest supported) cannot walk an annotated dict key in nested variables.
    breakers: dict[str, BreakerSettings] = Field(
        default_factory=dict,
        description="Settings of one named breaker over the ones above, by breaker name.",
        examples=['{"openai": {"open_duration": "10s", "window": "30s"}}'],
    )

    @field_validator("breakers")
    @classmethod
    def _breaker_names(cls, breakers: dict[str, BreakerSettings]) -> dict[str, BreakerSettings]:
        for name in breakers:
            check_breaker_name(name)
        return breakers
