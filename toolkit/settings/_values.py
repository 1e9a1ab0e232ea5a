"""The values settings hold: rate limits, durations, backend URLs, paths, header names,
callers and breaker names, each parsed and checked where it is read, with a message that
names a valid example. The sections annotate their fields with these types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
from pydantic import AfterValidator, BeforeValidator, PlainSerializer, PlainValidator

from toolkit._duration import parse_seconds
from toolkit.identity import CallerSpec, ProxyHeader, parse_caller

Algorithm = Literal["gcra", "fixed-window", "moving-window", "sliding-window-counter"]
FailureMode = Literal["open", "closed"]
HeaderStyle = Literal["ietf", "legacy", "both", "none"]


MAX_LIMIT_WINDOW = limits.RateLimitItemPerYear.GRANULARITY.seconds
"""The longest window a rate limit may have (its longest unit, a year): a longer budget is a
quota, not a rate limit."""


def rate_limit_problem(item: limits.RateLimitItem) -> str | None:
    """What makes one parsed limit unusable, or None. A limit lets through at least one
    request per window and at most one per microsecond (the finest rate GCRA, the default
    algorithm, resolves), over a window of at most a year."""
    window = item.get_expiry()
    text = f"'{item}'"
    if item.amount < 1:
        return f"{text} lets no request through; a limit allows at least 1, e.g. '60/minute'"
    if item.amount > window * 1_000_000:
        return (
            f"{text} is finer than one request per microsecond, the finest rate a limit "
            "resolves; write at most '1000000/second'"
        )
    if window > MAX_LIMIT_WINDOW:
        return f"{text} has a window longer than a year; write e.g. '100000/year' or '1000/day'"
    return None


def cost_problem(cost: int, items: Sequence[limits.RateLimitItem]) -> str | None:
    """Why no request of this cost could ever pass these limits, or None."""
    smallest = min(item.amount for item in items)
    if cost <= smallest:
        return None
    return (
        f"cost {cost} exceeds its smallest limit ({smallest} per window), so no request could "
        "ever pass; lower the cost or raise the limit"
    )


def parse_rate_limits(value: str) -> tuple[limits.RateLimitItem, ...]:
    """``"60/minute;1000/day"`` parsed, each limit checked by :func:`rate_limit_problem`.

    Raises:
        ValueError: the text is not a rate limit, or one of its limits is unusable.
    """
    try:
        items = tuple(limits.parse_many(value))
    except ValueError:
        items = ()
    if not items:
        raise ValueError(
            f"{value!r} is not a rate limit; write '60/minute' or '60/minute;1000/day'"
        )
    for item in items:
        problem = rate_limit_problem(item)
        if problem is not None:
            raise ValueError(problem)
    return items


def _check_rate_limit(value: str) -> str:
    parse_rate_limits(value)
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must start with '/'")
    return value


_URL_EXAMPLES = (
    "use 'memory://', 'redis://host:6379/0', 'rediss://host:6380/0' or "
    "'redis+cluster://host1:7000,host2:7001'"
)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _check_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("memory", "redis", "rediss", "redis+cluster"):
        raise ValueError(f"{value!r} is not a backend URL; {_URL_EXAMPLES}")
    if scheme == "redis+cluster":
        # The form the backend reads: comma-separated host:port startup nodes.
        nodes = rest.split(",")
        for node in nodes:
            host, colon, node_port = node.rpartition(":")
            if not colon or not host or not _is_port(node_port):
                raise ValueError(
                    f"{node!r} is not a cluster node; list host:port pairs, "
                    "e.g. 'redis+cluster://host1:7000,host2:7001'"
                )
    elif scheme != "memory":
        try:
            parts = urlsplit(value)
            port = parts.port  # parses it: a name or an out-of-range number raises
        except ValueError as exc:
            raise ValueError(f"not a backend URL ({exc}); {_URL_EXAMPLES}") from None
        if port == 0:
            raise ValueError("port 0 is not a port; e.g. 'redis://host:6379/0'")
        database = parts.path.strip("/")
        if database and not (database.isascii() and database.isdecimal()):
            raise ValueError(
                f"the path is the database number, not {database!r}; e.g. 'redis://host:6379/0'"
            )
    return value


def _is_port(text: str) -> bool:
    return text.isdecimal() and text.isascii() and 1 <= int(text) <= 65535


def _caller_text(spec: CallerSpec) -> str:
    return str(spec)


RateLimitString = Annotated[str, AfterValidator(_check_rate_limit)]
CallerSetting = Annotated[
    CallerSpec, PlainValidator(parse_caller), PlainSerializer(_caller_text, when_used="json")
]
"""Whose request it is (see :mod:`toolkit.identity`): text in the environment and the file, a
function too in code; held parsed."""
Path = Annotated[str, AfterValidator(_check_path)]
# "50ms" and "2s" are accepted wherever seconds are; the value is a float of seconds.
Seconds = Annotated[float, BeforeValidator(parse_seconds)]
BackendUrl = Annotated[str, AfterValidator(_check_url)]
ProxyHeaderSetting = Annotated[ProxyHeader, BeforeValidator(_lower)]
"""A proxy header's name, in any case."""


def _check_header(value: str) -> str:
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError(f"{value!r} is not a header name")
    return value.lower()


HeaderName = Annotated[str, AfterValidator(_check_header)]


BREAKER_NAME_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/"
)
"""What a circuit breaker's name is made of (it is a metric label and a Redis key part)."""


def check_breaker_name(value: str) -> str:
    if not value or not set(value) <= BREAKER_NAME_CHARACTERS:
        raise ValueError(
            f"{value!r} is not a breaker name; use letters, digits and ._-:/, e.g. 'openai'"
        )
    return value
