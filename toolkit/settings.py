"""All toolkit settings: one pydantic-settings model, validated at startup.

Values come, highest precedence first, from keyword arguments, ``TOOLKIT_*`` environment
variables (nested with ``__``: ``TOOLKIT_RATELIMIT__LIMIT="60/minute"``), a TOML file
(``toolkit.toml`` in the working directory, or the path in ``TOOLKIT_CONFIG``), then the
defaults below, each of which works on one machine. An invalid value raises
:class:`~toolkit.errors.ConfigurationError` naming the setting, its value and a valid example.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any, Literal, TypeVar

import limits
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from toolkit._duration import parse_seconds
from toolkit.errors import ConfigurationError

ENV_PREFIX = "TOOLKIT_"
CONFIG_FILE_ENV = "TOOLKIT_CONFIG"
DEFAULT_CONFIG_FILE = "toolkit.toml"

Algorithm = Literal["gcra", "fixed-window", "moving-window", "sliding-window-counter"]
FailureMode = Literal["open", "closed"]
HeaderStyle = Literal["ietf", "legacy", "both", "none"]
ProxyHeader = Literal["x-forwarded-for", "forwarded", "x-real-ip"]
DEFAULT_PROXY_HEADER: ProxyHeader = "x-forwarded-for"


def _check_rate_limit(value: str) -> str:
    try:
        items = limits.parse_many(value)
    except ValueError:
        items = []
    if not items:
        raise ValueError(
            f"{value!r} is not a rate limit; write '60/minute' or '60/minute;1000/day'"
        )
    return value


def _check_key(value: str) -> str:
    if value in ("client", "api_key") or (value.startswith("header:") and value[7:].strip()):
        return value
    raise ValueError(f"{value!r} is not a key; use 'client', 'api_key' or 'header:<Header-Name>'")


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must start with '/'")
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _check_url(value: str) -> str:
    scheme = value.partition("://")[0]
    if "://" not in value or scheme not in ("memory", "redis", "rediss", "redis+cluster"):
        raise ValueError(
            f"{value!r} is not a backend URL; use 'memory://', 'redis://host:6379/0', "
            "'rediss://host:6380/0' or 'redis+cluster://host1:7000,host2:7001'"
        )
    return value


RateLimitString = Annotated[str, AfterValidator(_check_rate_limit)]
KeySpec = Annotated[str, AfterValidator(_check_key)]
Path = Annotated[str, AfterValidator(_check_path)]
# "50ms" and "2s" are accepted wherever seconds are; the value is a float of seconds.
Seconds = Annotated[float, BeforeValidator(parse_seconds)]
IPNetwork = IPv4Network | IPv6Network


class _Section(BaseModel):
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
        description="Upper bound on every backend call, in seconds; past it the call fails.",
        examples=["50ms"],
    )
    key_prefix: str = Field(
        "toolkit",
        min_length=1,
        description="Prefix of every key the toolkit writes, so one Redis can serve many apps.",
        examples=["my-agent"],
    )
    max_connections: int = Field(
        64, ge=1, description="Size of the Redis connection pool per process.", examples=["64"]
    )


class RoutePolicySettings(_Section):
    """A rate-limit policy for the routes one pattern matches."""

    limit: RateLimitString = Field(examples=["10/minute;100/day"])
    cost: int = Field(1, ge=1, description="Units each request consumes.", examples=["5"])
    key: KeySpec | None = Field(
        None, description="Overrides the default key.", examples=["api_key"]
    )
    methods: list[str] | None = Field(
        None, description="Only these HTTP methods; all when unset.", examples=['["POST"]']
    )
    failure: FailureMode | None = Field(
        None, description="Overrides the default failure mode.", examples=["closed"]
    )
    shadow: bool | None = Field(None, description="Overrides the default shadow mode.")


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
    key: KeySpec = Field(
        "client",
        description="Whose budget a request spends: client, api_key or header:<Name>.",
        examples=["header:X-API-Key"],
    )
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


class CacheRouteSettings(_Section):
    """Caching of the responses of one route (a template or path pattern)."""

    ttl: Seconds = Field(description="How long a response is served from cache.", examples=["10m"])
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
        description="After ttl, serve the old response this long while one caller refreshes it.",
        examples=["30s"],
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Tags for invalidation (toolkit.cache.invalidate(tags=[...])).",
        examples=['["catalog"]'],
    )
    statuses: list[int] = Field(default_factory=lambda: [200], description="Statuses stored.")


class CacheSettings(_Section):
    """Caching: responses (per route), functions (@cached), embeddings (@cache_embeddings)."""

    routes: dict[Path, CacheRouteSettings] = Field(
        default_factory=dict,
        description="Routes whose responses are cached; nothing is cached unless listed.",
        examples=['{"/answers/{id}": {"ttl": "10m"}}'],
    )
    identity: KeySpec | None = Field(
        None,
        description="Whose response it is, for non-public routes: Authorization and Cookie "
        "when unset, or api_key, header:<Name>, client.",
        examples=["header:X-User-Id"],
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=0, description="Responses larger than this are not stored."
    )
    max_request_body_bytes: int = Field(
        64 * 1024, ge=0, description="Request bodies keyed (body=true) up to this size."
    )
    lease: Seconds = Field(
        10.0, description="Single-flight lease, renewed while the origin runs.", examples=["10s"]
    )
    wait: Seconds = Field(
        60.0, description="How long a caller waits for another's miss before going itself."
    )
    local_entries: int = Field(
        0, ge=0, description="Entries kept in process in front of Redis; 0 for no local tier."
    )
    local_ttl: Seconds = Field(5.0, description="Time to live of the in-process copies.")
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

    subject: KeySpec = Field(
        "client",
        description="What percentage rollouts bucket by: client, api_key or header:<Name>.",
        examples=["header:X-User-Id"],
    )
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
        10.0, description="Seconds between full reloads, the safety net behind pub/sub."
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
    size: int = Field(
        8,
        ge=1,
        description="Per key: objects (exclusive), or callers using the one object at once "
        "(shared).",
        examples=["8"],
    )
    max_waiting: int = Field(
        64,
        ge=0,
        description="Per key: callers that may wait for room; past it acquire fails at once "
        "(PoolExhaustedError, a 503).",
        examples=["64"],
    )
    acquire_timeout: Seconds = Field(
        30.0,
        gt=0,
        description="Longest an acquire waits and builds before PoolTimeoutError (a 503).",
        examples=["5s"],
    )
    create_timeout: Seconds = Field(
        60.0, gt=0, description="Longest one factory call may run.", examples=["30s"]
    )
    recycle_after: Seconds | None = Field(
        None,
        gt=0,
        description="Replace an object this long after it was built (minus jitter); never "
        "when unset.",
        examples=["30m"],
    )
    max_uses: int | None = Field(
        None,
        ge=1,
        description="Replace an object after this many acquires (minus jitter); never when unset.",
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
        description="An acquire that waits at least this long gets a toolkit.pool.wait span.",
        examples=["100ms"],
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
        description="Calls in the window before a rate counts (fleet-wide on Redis).",
        examples=["20"],
    )
    window: Seconds = Field(
        60.0, gt=0, description="Length of the sliding window of outcomes.", examples=["60s"]
    )
    open_duration: Seconds = Field(
        30.0,
        gt=0,
        description="First open period; doubled at each trip in a row, up to max_open_duration.",
        examples=["30s"],
    )
    max_open_duration: Seconds = Field(
        300.0, gt=0, description="Cap of the open period's backoff.", examples=["5m"]
    )
    probes: int = Field(
        3,
        ge=1,
        description="Probe calls let through in half-open, for the whole fleet; all must "
        "succeed to close.",
        examples=["3"],
    )
    probe_timeout: Seconds = Field(
        120.0,
        gt=0,
        description="A probe not reported within this is presumed lost and its permit freed.",
        examples=["2m"],
    )
    flush_interval: Seconds = Field(
        1.0,
        gt=0,
        description="How often each instance adds its successes to the shared window (and "
        "re-reads breaker states).",
        examples=["1s"],
    )
    timeout: Seconds | None = Field(
        120.0,
        gt=0,
        description="Default deadline of a @resilient call, backoff included.",
        examples=["30s"],
    )
    retry_budget: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Retries in flight may be at most this share of calls in flight...",
        examples=["0.2"],
    )
    retry_budget_minimum: int = Field(
        3, ge=0, description="...or this many, whichever is more.", examples=["3"]
    )


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
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise configuration_error(exc, type(self), style="env") from None

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
        path = os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)
        if path != DEFAULT_CONFIG_FILE and not os.path.isfile(path):
            raise ConfigurationError(
                f"{CONFIG_FILE_ENV}={path!r}: no such file. Point it at a TOML file such as "
                "'toolkit.toml', or unset it."
            )
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=path))


SectionT = TypeVar("SectionT", bound=BaseModel)


def validate_arguments(section: type[SectionT], values: dict[str, Any]) -> SectionT:
    """Build a settings section from keyword arguments; errors name the argument."""
    try:
        return section.model_validate(values)
    except ValidationError as exc:
        raise configuration_error(exc, section, style="argument") from None


def configuration_error(
    exc: ValidationError, model: type[BaseModel], *, style: Literal["env", "argument"]
) -> ConfigurationError:
    """Turn pydantic's report into one message that names each setting and a fix."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        if style == "env":
            name = ENV_PREFIX + "__".join(loc[:2]).upper()
            if len(loc) > 2:
                name += " (entry " + ".".join(loc[2:]) + ")"
        else:
            name = ".".join(loc) + "="
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" {value!r}"
        message = str(error["msg"]).removeprefix("Value error, ")
        line = f"{name}{shown}: {message}"
        example = _example_for(model, error["loc"])
        if example is not None:
            line += f" (example: {example})"
        lines.append(line)
    return ConfigurationError("invalid toolkit settings:\n  " + "\n  ".join(lines))


def _example_for(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """Follow ``loc`` through nested models to the field's documented example."""
    current: type[BaseModel] | None = model
    example: str | None = None
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            continue
        field = current.model_fields[part]
        example = str(field.examples[0]) if field.examples else None
        current = _nested_model(field.annotation)
    return example


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None
