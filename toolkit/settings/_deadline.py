"""The ``deadline`` section: the time budget of each request (a default, per-route budgets,
a request header bounded by a maximum)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from toolkit.settings._section import Section
from toolkit.settings._values import HeaderName, Path, Seconds


class DeadlineRouteSettings(Section):
    """The budget of the routes one pattern matches."""

    budget: Seconds | None = Field(
        description="Seconds the request may take, over the default; none (no deadline, e.g. "
        "a long stream) when null. 1ms to 1d.",
        ge=0.001,
        le=86400,
        examples=["5s"],
    )


def _route_from_value(value: Any) -> Any:
    # A bare duration (or null) is shorthand for a route with only its budget.
    return {"budget": value} if value is None or isinstance(value, str | int | float) else value


DeadlineRoute = Annotated[DeadlineRouteSettings, BeforeValidator(_route_from_value)]


class DeadlineSettings(Section):
    """How long each request may take: every toolkit timeout inside it (``@resilient``, a
    fan-out, a pool acquire) waits at most what is left, and a request that runs out before
    its answer started is answered 504. The ``pipelines.deadline`` flag turns it off."""

    default: Seconds | None = Field(
        None,
        ge=0.001,
        le=86400,
        description="Budget of every request without a route of its own; none when unset. "
        "1ms to 1d.",
        examples=["10s"],
    )
    routes: dict[Path, DeadlineRoute] = Field(
        default_factory=dict,
        description="Per-route budgets: route template or path pattern -> seconds, or null "
        "for none.",
        examples=['{"/chat/{session}": "8s", "/stream/*": null}'],
    )
    header: HeaderName | None = Field(
        "request-timeout",
        description="Request header whose value (seconds, e.g. 2.5) sets the request's "
        "budget, bounded by max; none is read when null. A value that is not a positive "
        "number is ignored (noted on the server span).",
        examples=["x-request-timeout"],
    )
    max: Seconds = Field(
        60.0,
        ge=0.001,
        le=86400,
        description="Longest budget the header may ask for; a longer one is cut to this. "
        "1ms to 1d.",
        examples=["30s"],
    )
