"""The ``cache`` section and its cached routes."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, model_validator

from toolkit._deprecated import Renamed
from toolkit.settings._section import Section
from toolkit.settings._values import CallerSetting, HeaderName, Path, Seconds

CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
"""Statuses a route may list: those RFC 9110 (15.1) lets caches reuse. 206 (a byte range) and
304 (a conditional answer) describe one request only."""
CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD", "POST"})


class CacheRouteSettings(Section):
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


class CacheSettings(Section):
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
        description="Responses (and @cached streams) larger than this are not stored. 1 to "
        "536870912 (512 MiB, the largest value Redis stores); 0 would store nothing.",
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
