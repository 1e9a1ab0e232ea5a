"""All toolkit settings: one pydantic-settings model, validated at startup.

Values come, highest precedence first, from keyword arguments, ``TOOLKIT_*`` environment
variables (nested with ``__``: ``TOOLKIT_RATELIMIT__LIMIT="60/minute"``), a TOML file
(``toolkit.toml`` in the working directory, or the path in ``TOOLKIT_CONFIG``), then the
defaults below, each of which works on one machine. An invalid value raises
:class:`~toolkit.errors.ConfigurationError` naming the setting, its value and a valid example,
and so does a ``TOOLKIT_*`` variable that names no setting (with the closest one that does) and
a ``toolkit.toml`` that is not TOML (with its line). Every duration and count is bounded to the
range where it makes sense; each field's description states its bounds.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Final,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
)
from urllib.parse import urlsplit

import limits
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from toolkit._deprecated import Renamed, RenamedFields, current_name, renamed_attributes
from toolkit._duration import format_seconds, parse_seconds
from toolkit.errors import ConfigurationError
from toolkit.identity import CLIENT, CallerSpec, parse_caller
from toolkit.identity import DEFAULT_PROXY_HEADER as DEFAULT_PROXY_HEADER
from toolkit.identity import IPNetwork as IPNetwork
from toolkit.identity import ProxyHeader as ProxyHeader

ENV_PREFIX = "TOOLKIT_"
CONFIG_FILE_ENV = "TOOLKIT_CONFIG"
DEFAULT_CONFIG_FILE = "toolkit.toml"

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


class _Section(RenamedFields):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSettings(_Section):
    """Where shared state lives: in this process, or in Redis for many instances."""

    url: Annotated[str, AfterValidator(_check_url)] = Field(
        "memory://",
        description="memory:// (one process) or redis://, rediss://, redis+cluster:// (many).",
        examples=["redis://localhost:6379/0"],
    )
    timeout: Seconds = Field(
        0.1,
        ge=0.01,
        le=10,
        description="Upper bound on every backend call, in seconds; past it the call fails. "
        "10ms to 10s: below 10ms a round trip and the event loop's own delay exceed it and "
        "every call fails (open: nothing is limited); above 10s a stalled backend holds every "
        "request that long.",
        examples=["50ms"],
    )
    key_prefix: str = Field(
        "toolkit",
        min_length=1,
        description="Prefix of every key the toolkit writes, so one Redis can serve many apps.",
        examples=["my-agent"],
    )
    max_connections: int = Field(
        64,
        ge=1,
        le=10000,
        description="Size of the Redis connection pool per process. 1 to 10000, Redis's "
        "default maxclients: one process must not be able to take every connection.",
        examples=["64"],
    )


class RoutePolicySettings(_Section):
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


class RateLimitSettings(_Section):
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
    proxy_header: Annotated[ProxyHeader, BeforeValidator(_lower)] = Field(
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


class TelemetrySettings(_Section):
    """Traces and metrics."""

    enabled: bool = Field(True, description="Default of the 'tracing' flag.")
    service_name: str = Field(
        "agent-server",
        min_length=1,
        description="service.name of traces and metrics.",
        examples=["support-agent"],
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL; traces and metrics are exported there when set.",
        examples=["http://localhost:4318"],
    )
    prometheus: bool = Field(True, description="Serve metrics in Prometheus format.")
    metrics_path: Path = Field("/metrics", description="Where Prometheus metrics are served.")
    excluded_paths: list[Path] = Field(
        default_factory=list,
        description="Paths with no span and no HTTP metrics (patterns allowed).",
        examples=['["/health"]'],
    )


def _check_header(value: str) -> str:
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError(f"{value!r} is not a header name")
    return value.lower()


HeaderName = Annotated[str, AfterValidator(_check_header)]

CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
"""Statuses a route may list: those RFC 9110 (15.1) lets caches reuse. 206 (a byte range) and
304 (a conditional answer) describe one request only."""
CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD", "POST"})


class CacheRouteSettings(_Section):
    """Caching of the responses of one route (a template or path pattern)."""

    ttl: Seconds = Field(
        ge=0.001,
        le=365 * 86400,
        description="How long a response is served from cache. 1ms (the backend's resolution) "
        "to 365d (a year, HTTP's customary longest freshness).",
        examples=["10m"],
    )
    methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD"],
        description="Methods cached; POST needs body=true.",
        examples=['["POST"]'],
    )
    public: bool = Field(
        False,
        description="Same response for every caller: the caller's identity is left out of the key.",
    )
    vary: list[HeaderName] = Field(
        default_factory=list,
        description="Request headers whose values select the response (part of the key).",
        examples=['["accept-language"]'],
    )
    body: bool = Field(
        False, description="Key on the JSON request body (canonical form, hashed): POST caching."
    )
    stale_while_revalidate: Seconds = Field(
        0.0,
        ge=0,
        le=365 * 86400,
        description="After ttl, serve the old response this long while one caller refreshes it. "
        "0s (never) to 365d.",
        examples=["30s"],
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Tags for invalidation (toolkit.cache.invalidate(tags=[...])).",
        examples=['["catalog"]'],
    )
    statuses: list[int] = Field(
        default_factory=lambda: [200],
        description="Statuses stored: among those RFC 9110 lets a cache reuse.",
        examples=["[200, 404]"],
    )

    @property
    def cached_methods(self) -> frozenset[str]:
        """The methods cached: ``methods``, upper case, with POST when ``body`` is set and
        ``methods`` is not."""
        methods = {m.upper() for m in self.methods}
        if self.body and "methods" not in self.model_fields_set:
            methods.add("POST")
        return frozenset(methods)

    @model_validator(mode="after")
    def _cacheable(self) -> CacheRouteSettings:
        unknown = sorted(self.cached_methods - CACHEABLE_METHODS)
        if unknown:
            raise ValueError(
                f"methods {unknown} are never cached (they change state); cache GET, HEAD, or "
                "POST with body=true"
            )
        if "POST" in self.cached_methods and not self.body:
            raise ValueError(
                "POST responses are cached only with body=true, which puts the JSON request "
                "body in the key"
            )
        refused = sorted(set(self.statuses) - CACHEABLE_STATUSES)
        if refused:
            raise ValueError(
                f"statuses {refused} cannot be stored; choose among {sorted(CACHEABLE_STATUSES)}"
            )
        return self


class CacheSettings(_Section):
    """Caching: responses (per route), functions (@cached), embeddings (@cache_embeddings)."""

    routes: dict[Path, CacheRouteSettings] = Field(
        default_factory=dict,
        description="Routes whose responses are cached; nothing is cached unless listed.",
        examples=['{"/answers/{id}": {"ttl": "10m"}}'],
    )
    caller: CallerSetting | None = Field(
        None,
        description="Whose response it is, for non-public routes: Authorization and Cookie "
        "when unset, or api_key, header:<Name>, client.",
        examples=["header:X-User-Id"],
    )
    identity = Renamed("caller")
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        le=512 * 1024 * 1024,
        description="Responses larger than this are not stored. 1 to 536870912 (512 MiB, the "
        "largest value Redis stores); 0 would store nothing.",
        examples=["1048576"],
    )
    max_request_body_bytes: int = Field(
        64 * 1024,
        ge=1,
        le=16 * 1024 * 1024,
        description="Request bodies keyed (body=true) up to this size. 1 to 16777216 (16 MiB): "
        "each such request holds its body in memory before the app runs.",
        examples=["65536"],
    )
    lease: Seconds = Field(
        10.0,
        ge=0.1,
        le=600,
        description="Single-flight lease, renewed every third of it while the origin runs. "
        "100ms to 10m: shorter sends more than 30 renewals a second per miss; longer holds "
        "the other callers that long after a leader's process dies.",
        examples=["10s"],
    )
    wait: Seconds = Field(
        60.0,
        ge=0.1,
        le=600,
        description="How long a caller waits for another's miss before going itself. 100ms to "
        "10m: shorter sends the waiting callers to the origin before most leaders are done.",
        examples=["60s"],
    )
    local_entries: int = Field(
        0,
        ge=0,
        le=1000000,
        description="Entries kept in process in front of Redis; 0 for no local tier. 0 to 1000000.",
        examples=["10000"],
    )
    local_ttl: Seconds = Field(
        5.0,
        ge=0.001,
        le=600,
        description="Time to live of the in-process copies, the staleness bound when an "
        "invalidation notice is lost. 1ms to 10m.",
        examples=["5s"],
    )
    serializer: Literal["json", "msgpack", "pickle"] = Field(
        "json",
        description="How @cached stores values; pickle only if you trust every writer.",
    )


class FlagDeclarationSettings(_Section):
    """An application flag declared in configuration rather than in code."""

    variants: dict[str, Any] | None = Field(
        None,
        description="Variant name -> value; a boolean on/off flag when unset.",
        examples=['{"small": "gpt-4o-mini", "large": "gpt-4o"}'],
    )
    default: str | None = Field(None, description="Variant served until an operator changes it.")
    description: str = Field("", description="One line for the admin page and the CLI.")


class FlagsSettings(_Section):
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


class AdminSettings(_Section):
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


PoolMode = Literal["shared", "exclusive"]


DEFAULT_EXCLUSIVE_POOL_SIZE: Final = 8
"""Objects per key of an exclusive pool whose ``size`` is unset."""


class PoolSettings(_Section):
    """The arguments of an :class:`~toolkit.AgentPool`, with their defaults. Each pool is
    configured in its constructor (``AgentPool(make_agent, size=4)``); these are checked
    there, and an invalid one raises ConfigurationError naming the argument."""

    mode: PoolMode = Field(
        "exclusive",
        description="exclusive: each caller gets an object of its own (clients, sessions, "
        "sandboxes); shared: one object per key used by every caller at once (an Agent).",
        examples=["shared"],
    )
    size: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Per key, 1 to 10000. exclusive: objects built at most (8 when unset). "
        "shared: callers using the one object at once (no bound when unset: a shared agent is "
        "not throttled).",
        examples=["8"],
    )
    max_keys: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Keys the pool keeps at once; a new key past it evicts the least recently "
        "used idle key (its objects closed), or is refused (a 503) when every key is busy. "
        "1 to 100000.",
        examples=["16"],
    )
    max_waiting: int = Field(
        64,
        ge=0,
        le=100000,
        description="Per key: callers that may wait for room; past it acquire fails at once "
        "(PoolExhaustedError, a 503). 0 (never wait) to 100000.",
        examples=["64"],
    )
    acquire_timeout: Seconds = Field(
        30.0,
        ge=0.001,
        le=3600,
        description="Longest an acquire waits and builds before PoolTimeoutError (a 503). 1ms "
        "to 1h.",
        examples=["5s"],
    )
    create_timeout: Seconds = Field(
        60.0,
        ge=0.001,
        le=3600,
        description="Longest one factory call may run. 1ms to 1h.",
        examples=["30s"],
    )
    recycle_after: Seconds | None = Field(
        None,
        ge=1,
        le=365 * 86400,
        description="Replace an object this long after it was built (minus jitter); never "
        "when unset. 1s (shorter rebuilds without pause) to 365d.",
        examples=["30m"],
    )
    max_uses: int | None = Field(
        None,
        ge=1,
        le=1000000000,
        description="Replace an object after this many acquires (minus jitter); never when "
        "unset. 1 to 1000000000.",
        examples=["1000"],
    )
    recycle_jitter: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Each object's age and use limits are shortened by up to this share, at "
        "random, so objects built together are not all replaced together.",
        examples=["0.1"],
    )
    wait_threshold: Seconds = Field(
        0.1,
        ge=0.001,
        le=3600,
        description="An acquire that waits at least this long gets a toolkit.pool.wait span. "
        "1ms to 1h.",
        examples=["100ms"],
    )
    check_interval: Seconds = Field(
        30.0,
        ge=0,
        le=3600,
        description="health_check runs on an object not known good for this long (built, "
        "checked, or given back without error); 0 checks at every checkout. In shared mode "
        "it runs in the background while callers go on using the object. 0s to 1h.",
        examples=["30s"],
    )


BREAKER_NAME_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/"
)
"""What a circuit breaker's name is made of (it is a metric label and a Redis key part)."""


def _check_breaker_name(value: str) -> str:
    if not value or not set(value) <= BREAKER_NAME_CHARACTERS:
        raise ValueError(
            f"{value!r} is not a breaker name; use letters, digits and ._-:/, e.g. 'openai'"
        )
    return value


class BreakerSettings(_Section):
    """One named breaker's settings (``resilience.breakers.<name>``); what is unset comes
    from the ``resilience`` section. Arguments in code still win over both."""

    failure_rate: float | None = Field(
        None, gt=0, le=1, description="As resilience.failure_rate.", examples=["0.5"]
    )
    minimum_calls: int | None = Field(
        None,
        ge=1,
        le=1000000,
        description="As resilience.minimum_calls. 1 to 1000000.",
        examples=["20"],
    )
    window: Seconds | None = Field(
        None, ge=0.1, le=86400, description="As resilience.window. 100ms to 1d.", examples=["30s"]
    )
    open_duration: Seconds | None = Field(
        None,
        ge=0.1,
        le=86400,
        description="As resilience.open_duration. 100ms to 1d.",
        examples=["10s"],
    )
    max_open_duration: Seconds | None = Field(
        None,
        ge=0.1,
        le=86400,
        description="As resilience.max_open_duration. 100ms to 1d.",
        examples=["2m"],
    )
    probes: int | None = Field(
        None, ge=1, le=1000, description="As resilience.probes. 1 to 1000.", examples=["3"]
    )
    probe_timeout: Seconds | None = Field(
        None,
        ge=0.1,
        le=86400,
        description="As resilience.probe_timeout. 100ms to 1d.",
        examples=["2m"],
    )


class ResilienceSettings(_Section):
    """Defaults of circuit breakers, retries and deadlines (``@toolkit.resilient``). Each
    breaker and decorator may override them in its arguments."""

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
            _check_breaker_name(name)
        return breakers


class ToolkitSettings(BaseSettings):
    """Every toolkit setting. Construct it, or let :func:`toolkit.install` load it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    backend: BackendSettings = Field(default_factory=BackendSettings)  # type: ignore[arg-type]
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)  # type: ignore[arg-type]
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)  # type: ignore[arg-type]
    cache: CacheSettings = Field(default_factory=CacheSettings)  # type: ignore[arg-type]
    flags: FlagsSettings = Field(default_factory=FlagsSettings)  # type: ignore[arg-type]
    admin: AdminSettings = Field(default_factory=AdminSettings)  # type: ignore[arg-type]
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)  # type: ignore[arg-type]

    def __init__(self, **values: Any) -> None:
        # pydantic-settings ignores a variable that names no field and reports an undecodable
        # one by its section only: both are checked first, each named.
        check_environment(os.environ)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise configuration_error(
                exc, type(self), style="env", origin=_Origin(values, os.environ)
            ) from None
        except SettingsError as exc:  # a value none of the checks above foresaw
            raise ConfigurationError(f"invalid toolkit settings: {exc}") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings, file_secret_settings
        path = _config_file()
        if path != DEFAULT_CONFIG_FILE and not os.path.isfile(path):
            raise ConfigurationError(
                f"{CONFIG_FILE_ENV}={path!r}: no such file. Point it at a TOML file such as "
                "'toolkit.toml', or unset it."
            )
        try:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(_toml_error(path, exc)) from None
        return (init_settings, env_settings, toml)


SectionT = TypeVar("SectionT", bound=BaseModel)


def validate_arguments(section: type[SectionT], values: dict[str, Any]) -> SectionT:
    """Build a settings section from keyword arguments; errors name the argument."""
    try:
        return section.model_validate(values)
    except ValidationError as exc:
        raise configuration_error(exc, section, style="argument") from None


def with_arguments(
    section: type[SectionT], settings: SectionT | None, *arguments: Mapping[str, Any]
) -> SectionT:
    """``settings`` (the section's defaults when None) with the values of ``arguments`` that
    are not None over it, each mapping over the ones before, validated as one; errors name
    the argument.

    Only the fields ``settings`` was given are carried over, the others defaulting again: a
    field's meaning may depend on whether it was set (a cached route's ``methods``), which a
    full dump would lose by setting them all."""
    given = {
        name: value for layer in arguments for name, value in layer.items() if value is not None
    }
    if settings is not None and not given:
        return settings
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    return validate_arguments(section, {**base, **given})


def configuration_error(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    style: Literal["env", "argument"],
    origin: _Origin | None = None,
) -> ConfigurationError:
    """Turn pydantic's report into one message that names each setting and a fix: the
    ``TOOLKIT_*`` variable, or the file and table when ``origin`` says the value came from
    ``toolkit.toml``, or the keyword argument."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        file = origin.file_for(loc) if origin is not None else None
        name = _setting_name(loc, style, file)
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" {value!r}"
        message = str(error["msg"]).removeprefix("Value error, ")
        example = _example_for(model, error["loc"])
        if error["type"] == "extra_forbidden":
            message, example = _unknown_name(model, loc, style, file)
        elif error["type"] in _BOUNDS:
            message = _bound_message(model, error)
        line = f"{name}{shown}: {message}" if loc else message
        if example is not None:
            line += f" (example: {example})"
        lines.append(line)
    return ConfigurationError("invalid toolkit settings:\n  " + "\n  ".join(lines))


def _example_for(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """Follow ``loc`` through nested models to the field's documented example."""
    field = _field_at(model, loc)
    return str(field.examples[0]) if field is not None and field.examples else None


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


# --- what names a setting, and how an error names it ------------------------------------------


def _config_file() -> str:
    return os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)


def _toml_error(path: str, exc: ValueError) -> str:
    """``toolkit.toml, line 3, column 9: <what is wrong>`` and what TOML looks like."""
    text = str(exc)
    # Python 3.14 gives lineno/colno/msg; earlier versions only the message.
    position = re.search(r" \(at line (\d+), column (\d+)\)$", text)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if line is None and position is not None:
        line, column, text = int(position[1]), int(position[2]), text[: position.start()]
    where = f"{path}, line {line}, column {column}" if line is not None else path
    if isinstance(exc, UnicodeDecodeError):
        text = "not UTF-8 text"
    return (
        f"{where}: {getattr(exc, 'msg', text)}; the file is TOML with one table per section, "
        'e.g. [ratelimit] then limit = "60/minute" on the next line'
    )


class _Origin:
    """Which source gave the value at a location: a keyword argument, a ``TOOLKIT_*``
    variable, or the TOML file (the lowest precedence: only what the others did not set)."""

    def __init__(self, values: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self._values = values
        self._variables = {name.upper() for name in environ}
        self._path = _config_file()
        self._toml: dict[str, Any] | None = None

    def file_for(self, loc: tuple[str, ...]) -> str | None:
        """The config file's path when the value at ``loc`` came from it, else None."""
        if not loc or loc[0] in self._values:
            return None
        prefix = ENV_PREFIX + "__".join(loc[:2]).upper()
        if any(v == prefix or v.startswith(prefix + "__") for v in self._variables):
            return None
        if len(loc) > 1 and ENV_PREFIX + loc[0].upper() in self._variables:
            return None
        table: Any = self._read()
        for part in loc[:2]:
            if not isinstance(table, dict) or part not in table:
                return None
            table = table[part]
        return self._path

    def _read(self) -> dict[str, Any]:
        if self._toml is None:
            try:
                with open(self._path, "rb") as file:
                    self._toml = tomllib.load(file)
            except OSError:
                self._toml = {}
        return self._toml


def _setting_name(loc: tuple[str, ...], style: Literal["env", "argument"], file: str | None) -> str:
    entry = " (entry " + ".".join(loc[2:]) + ")" if len(loc) > 2 else ""
    if file is not None:
        return f"{file} [{loc[0]}]" + (f" {loc[1]}" if len(loc) > 1 else "") + entry
    if style == "env":
        return ENV_PREFIX + "__".join(loc[:2]).upper() + entry
    return ".".join(loc) + "="


def _unknown_name(
    model: type[BaseModel],
    loc: tuple[str, ...],
    style: Literal["env", "argument"],
    file: str | None,
) -> tuple[str, str | None]:
    """The message and example for a name that is no field: the closest field instead."""
    parent: type[BaseModel] | None = model
    for part in loc[:-1]:  # fields lead to the next model; dict keys are passed over
        if parent is not None and part in parent.model_fields:
            parent = _nested_model(parent.model_fields[part].annotation)
    if parent is None:
        return "names no setting", None
    if file is not None and loc == ("tool",):
        return (
            f"{file} takes the sections at its top level: write [cache], not "
            "[tool.toolkit.cache] (the form of pyproject.toml, which is not read)",
            None,
        )
    close = difflib.get_close_matches(loc[-1], list(parent.model_fields), n=1)
    if not close:
        return f"names no setting; these do: {', '.join(parent.model_fields)}", None
    suggestion = (*loc[:-1], close[0])
    name = _setting_name(suggestion, style, file).removeprefix(f"{file} ")
    return f"names no setting; did you mean {name}?", _example_for(model, suggestion)


_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def _bound_message(model: type[BaseModel], error: Any) -> str:
    """``must be at least 1s``: the bound in the field's own unit."""
    key, words = _BOUNDS[error["type"]]
    bound = error.get("ctx", {}).get(key)
    field = _field_at(model, error["loc"])
    duration = field is not None and is_duration(field)
    shown = format_seconds(float(bound)) if duration else str(bound)
    return f"must be {words} {shown}"


def _field_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The field ``loc`` ends at, through nested models and dict entries."""
    current: type[BaseModel] | None = model
    found: FieldInfo | None = None
    for part in loc:
        if current is None or not isinstance(part, str):
            continue
        part = current_name(current, part)
        if part not in current.model_fields:
            continue
        found = current.model_fields[part]
        current = _nested_model(found.annotation)
    return found


def is_duration(field: FieldInfo) -> bool:
    """Whether ``field`` holds :data:`Seconds` (``"50ms"``, ``"2s"``), optional or not."""

    def wraps(metadata: Any, annotation: Any) -> bool:
        if any(getattr(item, "func", None) is parse_seconds for item in metadata):
            return True
        inner = get_args(annotation)
        return any(wraps(getattr(arg, "__metadata__", ()), arg) for arg in inner)

    return wraps(field.metadata, field.annotation)


def _core(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``| None``."""
    while True:
        if hasattr(annotation, "__metadata__"):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType) and type(None) in get_args(annotation):
            rest = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _is_complex(annotation: Any) -> bool:
    """Whether pydantic-settings reads a variable for this field as JSON."""
    core = _core(annotation)
    if isinstance(core, type) and issubclass(core, BaseModel):
        return True
    return get_origin(core) in (list, dict, set, frozenset, tuple)


def variable_field(name: str) -> FieldInfo | None:
    """The field a ``TOOLKIT_*`` variable sets (for an entry of a dict, the dict's field), or
    None when it names no setting. Case does not matter, as for pydantic-settings."""
    upper = name.upper()
    if not upper.startswith(ENV_PREFIX):
        return None
    parts = upper.removeprefix(ENV_PREFIX).lower().split("__")
    if "" in parts:
        return None
    annotation: Any = ToolkitSettings  # what the next part selects in
    field: FieldInfo | None = None
    for part in parts:
        core = _core(annotation)
        if get_origin(core) is dict:  # the part is a key, any text; then its value's type
            annotation = get_args(core)[1]
            continue
        if not (isinstance(core, type) and issubclass(core, BaseModel)):
            return None  # nothing nests in a scalar
        field = core.model_fields.get(current_name(core, part))
        if field is None:
            return None
        annotation = field.annotation
    return field


def _variables() -> list[str]:
    """Every ``TOOLKIT_<SECTION>`` and ``TOOLKIT_<SECTION>__<FIELD>`` name, and the file's."""
    names = [CONFIG_FILE_ENV]
    for section, info in ToolkitSettings.model_fields.items():
        names.append(ENV_PREFIX + section.upper())
        nested = _nested_model(info.annotation)
        for field in nested.model_fields if nested is not None else ():
            names.append(f"{ENV_PREFIX}{section.upper()}__{field.upper()}")
    return names


def _example_assignment(name: str) -> str | None:
    """``NAME=<a valid value>``, shell-quoted, from the field's example or default."""
    field = variable_field(name)
    if field is None:
        return None
    if field.examples:
        value = str(field.examples[0])
    elif isinstance(field.default, bool):
        value = str(field.default).lower()
    elif isinstance(field.default, str | int | float):
        value = str(field.default)
    else:
        return None
    return f"{name}={shlex.quote(value)}"


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse the ``TOOLKIT_*`` variables of ``environ`` that name no setting (naming the
    closest one) and those a list, dict or section reads that are not JSON.

    Raises:
        ConfigurationError: naming each such variable and a valid example.
    """
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_FILE_ENV:
            continue
        field = variable_field(name)
        if field is None:
            close = difflib.get_close_matches(upper, _variables(), n=1, cutoff=0.6)
            line = f"{name} names no setting"
            if close:
                line += f"; did you mean {close[0]}?"
                example = _example_assignment(close[0])
                if example is not None:
                    line += f" (example: {example})"
            else:
                line += (
                    f"; settings are {ENV_PREFIX}<SECTION>__<FIELD>, with the sections "
                    + ", ".join(s.upper() for s in ToolkitSettings.model_fields)
                )
            lines.append(line)
        elif upper.count("__") <= 1 and _is_complex(field.annotation):
            try:
                json.loads(environ[name])
            except ValueError:
                kind = "list" if get_origin(_core(field.annotation)) is list else "object"
                line = f"{name} {environ[name]!r}: is not JSON; this setting is a JSON {kind}"
                example = _example_assignment(upper)
                if example is not None:
                    line += f" (example: {example})"
                lines.append(line)
    if lines:
        raise ConfigurationError("invalid toolkit settings:\n  " + "\n  ".join(lines))


if TYPE_CHECKING:  # the old name, deprecated: a warning at run time
    KeySpec = CallerSetting
else:
    __getattr__ = renamed_attributes(__name__, {"KeySpec": ("CallerSetting", CallerSetting)})
