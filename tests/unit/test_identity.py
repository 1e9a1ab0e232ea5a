"""Callers: whose request it is, one grammar and one resolver for every capability, and why
forged proxy headers change nothing."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import itertools
import json
import pathlib
import re
from typing import Any, get_args, get_origin

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from starlette.types import Receive, Scope, Send

import toolkit
from tests.support.asgi import http_scope, lifespan
from toolkit import (
    ConfigurationError,
    RateLimitMiddleware,
    ResponseCacheMiddleware,
    ToolkitSettings,
)
from toolkit.flags import FlagStore
from toolkit.identity import CallerResolver, ClientAddress, OnError, digest, parse_caller
from toolkit.ratelimit import Policy
from toolkit.settings import ProxyHeader
from toolkit.settings._root import check_environment
from toolkit.telemetry import names

PROXY = "10.0.0.5"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called")


forged_hop = st.one_of(
    st.ip_addresses().map(str),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)


def resolve(spec: object, scope: dict[str, object], trusted: tuple[str, ...] = ()) -> str:
    return asyncio.run(CallerResolver(spec, ClientAddress(trusted))(scope))  # type: ignore[arg-type]


def test_client_caller_is_the_peer_address_by_default() -> None:
    scope = http_scope(client=("203.0.113.7", 5555), headers=[("x-forwarded-for", "1.1.1.1")])
    assert resolve("client", scope) == "client:203.0.113.7"


# --- the client address behind proxies --------------------------------------------------------

UNTRUSTED_PEER = "198.51.100.9"
# What each header says when the proxy (or the client) sent it: a forged hop on the left, and
# on the right the address the writer of the header saw.
SENT = {
    "x-forwarded-for": ("6.6.6.1, 192.0.2.1", "192.0.2.1"),
    "forwarded": ('for=6.6.6.2;proto=https, for="192.0.2.2";by=10.0.0.5', "192.0.2.2"),
    "x-real-ip": ("192.0.2.3", "192.0.2.3"),
}
HEADERS = tuple(SENT)


def address(
    headers: list[tuple[str, str]],
    *,
    peer: str = PROXY,
    header: ProxyHeader = "x-forwarded-for",
    trusted: tuple[str, ...] = ("10.0.0.0/8",),
) -> str | None:
    return ClientAddress(trusted, header=header)(http_scope(client=(peer, 4000), headers=headers))


COMBINATIONS = [
    (header, sent, trusted_peer)
    for header in HEADERS
    for size in range(len(HEADERS) + 1)
    for sent in itertools.combinations(HEADERS, size)
    for trusted_peer in (True, False)
]


@pytest.mark.parametrize(
    ("header", "sent", "trusted_peer"),
    COMBINATIONS,
    ids=[
        f"{h}-sent:{'+'.join(s) or 'none'}-{'proxy' if t else 'direct'}" for h, s, t in COMBINATIONS
    ],
)
def test_client_address_reads_only_the_header_the_trusted_proxy_writes(
    header: ProxyHeader, sent: tuple[str, ...], trusted_peer: bool
) -> None:
    """Every combination of the three headers: the configured one decides behind a trusted
    proxy, the other two change nothing, and a peer that is not a trusted proxy is the client
    whatever it sends."""
    peer = PROXY if trusted_peer else UNTRUSTED_PEER
    headers = [(name, SENT[name][0]) for name in sent]
    if not trusted_peer:
        expected = UNTRUSTED_PEER
    elif header in sent:
        expected = SENT[header][1]
    else:
        expected = PROXY  # the proxy wrote nothing: all we know is the proxy
    assert address(headers, peer=peer, header=header) == expected


def test_a_client_cannot_choose_its_address_with_a_forwarded_header_the_proxy_does_not_write() -> (
    None
):
    """The proxy appends X-Forwarded-For only; the client's own Forwarded is not read."""
    for forged in ("for=6.6.6.6", 'for="[2001:db8::6]"', "for=10.0.0.7, for=6.6.6.6"):
        headers = [("forwarded", forged), ("x-forwarded-for", "192.0.2.44")]
        assert address(headers) == "192.0.2.44"
        assert address([("x-real-ip", "6.6.6.6"), ("x-forwarded-for", "192.0.2.44")]) == (
            "192.0.2.44"
        )


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        # IPv4 with and without a port
        ("x-forwarded-for", "192.0.2.7", "192.0.2.7"),
        ("x-forwarded-for", "192.0.2.7:8443", "192.0.2.7"),
        # IPv6: bare, bracketed, bracketed with a port, compressed spellings normalised
        ("x-forwarded-for", "2001:db8::7", "2001:db8::7"),
        ("x-forwarded-for", "[2001:db8::7]", "2001:db8::7"),
        ("x-forwarded-for", "[2001:db8::7]:8443", "2001:db8::7"),
        ("x-forwarded-for", "2001:DB8:0:0:0:0:0:7", "2001:db8::7"),
        ("x-forwarded-for", "[::ffff:192.0.2.7]:80", "192.0.2.7"),  # IPv4 mapped into IPv6
        ("x-real-ip", "[2001:db8::7]:1", "2001:db8::7"),
        ("forwarded", 'for="[2001:db8::7]:4711"', "2001:db8::7"),
        ("forwarded", "for=[2001:db8::7]", "2001:db8::7"),
        ("forwarded", 'For="192.0.2.7:80";Proto=https', "192.0.2.7"),
        ("forwarded", "proto=https;for=192.0.2.7;by=10.0.0.5", "192.0.2.7"),
        # trusted hops are walked past, in any spelling
        ("x-forwarded-for", "192.0.2.7, 10.0.0.9:80, [::ffff:10.0.0.8]", "192.0.2.7"),
        ("forwarded", 'for=192.0.2.7, for="10.0.0.9:80", for="[::ffff:10.0.0.8]"', "192.0.2.7"),
        # a hop that is not an address stops the walk and is the identity
        ("forwarded", "for=unknown", "unknown"),
        ("forwarded", "for=192.0.2.7, for=_hidden", "_hidden"),
        ("forwarded", "for=192.0.2.7, proto=https", "unknown"),  # an element with no for
        ("x-forwarded-for", "192.0.2.7, ", "unknown"),
        ("x-forwarded-for", "192.0.2.7, not-an-ip", "not-an-ip"),
        ("x-forwarded-for", "[2001:db8::7", "[2001:db8::7"),  # no closing bracket
        ("x-forwarded-for", "[2001:db8::7]x", "[2001:db8::7]x"),
        ("x-forwarded-for", "192.0.2.256", "192.0.2.256"),
        # what a client sent before the proxy's hop is never reached
        ("x-forwarded-for", "garbage,,[,]:;=, 192.0.2.7", "192.0.2.7"),
        ("forwarded", 'for="6.6.6.6, for=6.6.6.7;x="\\, for=192.0.2.7', "192.0.2.7"),
        ("forwarded", 'for="6.6.6.6, for="[2001:db8::7]"', "2001:db8::7"),  # an open quote
        # every hop is a trusted proxy: the leftmost is the client
        ("x-forwarded-for", "10.0.0.1, 10.0.0.2", "10.0.0.1"),
        # the header is there but empty
        ("x-forwarded-for", "", "unknown"),
    ],
)
def test_client_address_parses_every_spelling_of_a_hop_and_stops_at_what_it_cannot_read(
    header: ProxyHeader, value: str, expected: str
) -> None:
    assert address([(header, value)], header=header) == expected


def test_a_peer_address_is_trusted_in_every_spelling_the_server_gives_it() -> None:
    for peer in ("10.0.0.5", "::ffff:10.0.0.5"):
        assert address([("x-forwarded-for", "192.0.2.9")], peer=peer) == "192.0.2.9"
    v6 = ("2001:db8:1::/48",)
    assert address([("x-forwarded-for", "192.0.2.9")], peer="2001:db8:1::5", trusted=v6) == (
        "192.0.2.9"
    )
    assert address([("x-forwarded-for", "192.0.2.9")], peer="2001:db8:2::5", trusted=v6) == (
        "2001:db8:2::5"
    )


def test_without_trusted_proxies_no_header_is_read() -> None:
    for header in HEADERS:
        headers = [(name, value) for name, (value, _) in SENT.items()]
        assert address(headers, header=header, trusted=()) == PROXY


def test_repeated_header_lines_form_one_list_in_order() -> None:
    lines = [("x-forwarded-for", "6.6.6.6, 192.0.2.1"), ("x-forwarded-for", "10.1.1.1")]
    assert address(lines) == "192.0.2.1"
    lines = [("forwarded", "for=6.6.6.6"), ("forwarded", "for=192.0.2.1, for=10.1.1.1")]
    assert address(lines, header="forwarded") == "192.0.2.1"


def test_an_unknown_proxy_header_is_refused_naming_the_setting() -> None:
    from toolkit import ConfigurationError, ToolkitSettings

    with pytest.raises(ConfigurationError, match="proxy_header"):
        ClientAddress(("10.0.0.0/8",), header="x-client-ip")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="TOOLKIT_RATELIMIT__PROXY_HEADER"):
        ToolkitSettings(ratelimit={"proxy_header": "x-client-ip"})
    assert ToolkitSettings(ratelimit={"proxy_header": "Forwarded"}).ratelimit.proxy_header == (
        "forwarded"
    )


def forwarded_text(hops: list[str]) -> str:
    return ", ".join(f"for={hop}" for hop in hops)


@settings(max_examples=300, deadline=None)
@given(
    hops=st.lists(forged_hop, min_size=1, max_size=5),
    sent=st.sets(st.sampled_from(HEADERS), min_size=1),
    header=st.sampled_from(HEADERS),
)
def test_forwarded_headers_from_an_untrusted_peer_never_change_the_key(
    hops: list[str], sent: set[str], header: ProxyHeader
) -> None:
    """A client talking to us directly cannot pick its key by sending proxy headers."""
    value = {"forwarded": forwarded_text(hops)}
    headers = [(name, value.get(name, ", ".join(hops))) for name in sorted(sent)]
    assert address(headers, peer=UNTRUSTED_PEER, header=header) == UNTRUSTED_PEER


# A client may send anything, quotes, commas and semicolons included, in any of the headers.
forged_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
client_ip = (
    st.ip_addresses()
    .filter(lambda ip: not ip.is_private and not getattr(ip, "ipv4_mapped", None))
    .map(str)
)


@settings(max_examples=500, deadline=None)
@given(
    header=st.sampled_from(HEADERS),
    forged=st.dictionaries(st.sampled_from(HEADERS), forged_text),
    client=client_ip,
    spelling=st.sampled_from(["bare", "port", "bracketed"]),
)
def test_behind_a_trusted_proxy_only_the_hop_it_wrote_counts(
    header: ProxyHeader, forged: dict[str, str], client: str, spelling: str
) -> None:
    """Whatever the client sends, in whichever header, the address is the one the trusted
    proxy appended (or, for X-Real-IP, set) in the header it writes, in any spelling."""
    v6 = ":" in client
    node = {
        "bare": client,
        "port": f"[{client}]:4711" if v6 else f"{client}:4711",
        "bracketed": f"[{client}]" if v6 else client,
    }[spelling]
    written = f'for="{node}";proto=https' if header == "forwarded" else node
    headers = [(name, text) for name, text in forged.items() if name != header]
    if header == "x-real-ip" or header not in forged:
        headers.append((header, written))  # X-Real-IP is set, replacing the client's
    else:
        headers.append((header, f"{forged[header]}, {written}"))  # the others appended to
    assert address(headers, header=header) == str(ipaddress.ip_address(client))


@settings(max_examples=300, deadline=None)
@given(forged=st.lists(forged_hop, max_size=4))
def test_behind_a_trusted_proxy_only_the_hop_it_wrote_counts_in_x_forwarded_for(
    forged: list[str],
) -> None:
    """Whatever the client prepends, the key is the address the trusted proxy saw."""
    chain = ", ".join([*forged, "192.0.2.44"])
    scope = http_scope(client=(PROXY, 4000), headers=[("x-forwarded-for", chain)])
    assert resolve("client", scope, trusted=("10.0.0.0/8",)) == "client:192.0.2.44"


def test_api_key_uses_x_api_key_then_authorization_then_the_address() -> None:
    assert resolve("api_key", http_scope(headers=[("x-api-key", "k1")])) == "api_key:k1"
    assert resolve("api_key", http_scope(headers=[("authorization", "Bearer t")])) == (
        "api_key:Bearer t"
    )
    assert resolve("api_key", http_scope(client=("192.0.2.3", 1))) == "client:192.0.2.3"


def test_a_header_caller_cannot_collide_with_an_address() -> None:
    scope = http_scope(client=("192.0.2.3", 1), headers=[("x-tenant", "192.0.2.3")])
    assert resolve("header:X-Tenant", scope) != resolve("client", scope)


def test_caller_functions_may_be_sync_or_async() -> None:
    async def tenant(scope: dict[str, object]) -> str:
        return "acme"

    assert resolve(lambda scope: "u1", http_scope()) == "custom:u1"
    assert resolve(tenant, http_scope()) == "custom:acme"
    assert resolve(lambda scope: None, http_scope(client=("192.0.2.8", 1))) == "client:192.0.2.8"


def test_a_failing_caller_function_falls_back_and_is_recorded(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    def broken(scope: object) -> str:
        raise LookupError("no tenant")

    with tracer_provider.get_tracer("t").start_as_current_span("request"):
        assert resolve(broken, http_scope(client=("192.0.2.8", 1))) == "client:192.0.2.8"
    (event,) = span_exporter.get_finished_spans()[0].events
    assert event.name == "exception"
    assert event.attributes[names.HOOK] == "ratelimit.caller"


def test_digests_are_stable_and_hide_the_identity() -> None:
    assert digest("default", "api_key:secret") == digest("default", "api_key:secret")
    assert digest("default", "api_key:secret") != digest("other", "api_key:secret")
    assert "secret" not in digest("default", "api_key:secret")
    assert len(digest("p", "x" * 10_000)) == 32


@pytest.mark.parametrize("spec", ["ip", "header:", "cookie:x"])
def test_unknown_caller_specs_are_refused(spec: str) -> None:
    from toolkit import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a caller"):
        CallerResolver(spec, ClientAddress())


@pytest.mark.anyio
async def test_installed_limiter_cache_and_flags_all_read_the_address_the_proxy_wrote() -> None:
    """Behind a proxy that appends X-Forwarded-For, a client that sends its own Forwarded
    (a new address each time) still spends one rate-limit budget, gets the cached response of
    its one identity and is one flag rollout caller."""
    app = FastAPI()
    runs = itertools.count(1)

    @app.get("/who")
    async def who(request: Request) -> dict[str, object]:
        store = request.app.state.toolkit.store
        return {"caller": store.caller_of(request.scope), "run": next(runs)}

    toolkit.install(
        app,
        ToolkitSettings(
            ratelimit={"limit": "3/minute", "trusted_proxies": ["10.0.0.0/8"]},
            cache={"caller": "client", "routes": {"/who": {"ttl": 60}}},
            telemetry={"prometheus": False},
        ),
    )
    transport = httpx.ASGITransport(app=app, client=(PROXY, 4000))
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answers = [
            await http.get(
                "/who",
                headers={"x-forwarded-for": "192.0.2.44", "forwarded": f"for=198.51.100.{i}"},
            )
            for i in range(4)
        ]
        other = await http.get("/who", headers={"x-forwarded-for": "192.0.2.45"})
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers.get("x-cache") for a in answers] == ["MISS", "HIT", "HIT", None]
    assert answers[0].json() == {"caller": "client:192.0.2.44", "run": 1}
    assert other.json() == {"caller": "client:192.0.2.45", "run": 2}


# --- one grammar, parsed once, wherever a caller is named ---------------------------------------


def _validated_by_parse_caller(annotation: Any, metadata: Any = ()) -> bool:
    if any(getattr(item, "func", None) is parse_caller for item in metadata):
        return True
    inner = getattr(annotation, "__metadata__", ())
    return any(_validated_by_parse_caller(arg, inner) for arg in get_args(annotation))


def _is_caller_setting(field: FieldInfo) -> bool:
    return _validated_by_parse_caller(field.annotation, field.metadata)


def _caller_settings() -> list[tuple[str, str, str | None]]:
    """Every caller setting, found in the models: (section, field, entry field) where an
    entry field is one of the entries of a dict setting (a route's own caller)."""
    found: list[tuple[str, str, str | None]] = []
    for section, info in ToolkitSettings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            if _is_caller_setting(field):
                found.append((section, name, None))
            entry = get_args(field.annotation)[1] if get_origin(field.annotation) is dict else None
            entry = get_args(entry)[0] if hasattr(entry, "__metadata__") else entry
            if isinstance(entry, type) and issubclass(entry, BaseModel):
                found += [
                    (section, name, sub)
                    for sub, subfield in entry.model_fields.items()
                    if _is_caller_setting(subfield)
                ]
    return found


CALLER_SETTINGS = _caller_settings()
ROUTE = "/x"


def _variable(section: str, name: str, entry: str | None, value: str) -> tuple[str, str]:
    """The ``TOOLKIT_*`` variable that sets this caller setting to ``value``."""
    variable = f"TOOLKIT_{section.upper()}__{name.upper()}"
    if entry is None:
        return variable, value
    return variable, json.dumps({ROUTE: {"limit": "5/minute", entry: value}})


def _read(settings: ToolkitSettings, section: str, name: str, entry: str | None) -> object:
    value = getattr(getattr(settings, section), name)
    return value if entry is None else getattr(value[ROUTE], entry)


def test_every_capability_names_its_caller_caller() -> None:
    """One name everywhere: the rate limit (and each route's), the cache and flag rollouts."""
    assert sorted(CALLER_SETTINGS) == [
        ("cache", "caller", None),
        ("flags", "caller", None),
        ("ratelimit", "caller", None),
        ("ratelimit", "routes", "caller"),
    ]


GOOD = {
    "client": "client",
    "api_key": "api_key",
    "header:X-User-Id": "header:x-user-id",
    "header: x-user-id ": "header:x-user-id",
}
BAD = ["ip", "header:", "header:  ", "cookie:session", "Client", " client", ""]


@pytest.mark.parametrize(("text", "kind"), GOOD.items())
def test_one_parser_reads_a_caller_the_same_in_settings_arguments_and_code(
    monkeypatch: pytest.MonkeyPatch, text: str, kind: str
) -> None:
    """The settings model, every TOOLKIT_* variable, the middlewares' caller= and the resolver
    all read a caller through parse_caller, to one equal value."""
    spec = parse_caller(text)
    assert spec.kind == kind
    assert str(spec) == kind
    assert repr(spec) == f"CallerSpec({kind!r})"
    assert spec == parse_caller(kind)
    assert hash(spec) == hash(parse_caller(kind))
    assert CallerResolver(text, ClientAddress()).spec == spec
    for section, name, entry in CALLER_SETTINGS:
        with monkeypatch.context() as env:
            env.setenv(*_variable(section, name, entry, text))
            assert _read(ToolkitSettings(), section, name, entry) == spec
    limiter = RateLimitMiddleware(_app, limit="1/second", caller=text)
    assert limiter.settings.caller == spec
    route = RateLimitMiddleware(_app, routes={ROUTE: {"limit": "1/second", "caller": text}})
    assert route.settings.routes[ROUTE].caller == spec
    assert ResponseCacheMiddleware(_app, caller=text, backend="memory://").settings.caller == spec


@pytest.mark.parametrize("text", BAD)
def test_one_parser_refuses_a_caller_the_same_everywhere_naming_where_it_was_given(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    message = f"{text!r} is not a caller; use 'client', 'api_key', 'header:<Header-Name>'"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_caller(text)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        CallerResolver(text, ClientAddress())
    for section, name, entry in CALLER_SETTINGS:
        variable, value = _variable(section, name, entry, text)
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
                ToolkitSettings()
        assert variable in str(caught.value)
    with pytest.raises(ConfigurationError, match=r"caller= .*is not a caller"):
        RateLimitMiddleware(_app, limit="1/second", caller=text)
    with pytest.raises(ConfigurationError, match=r"routes\./x\.caller= .*is not a caller"):
        RateLimitMiddleware(_app, routes={ROUTE: {"limit": "1/second", "caller": text}})
    with pytest.raises(ConfigurationError, match=r"caller= .*is not a caller"):
        ResponseCacheMiddleware(_app, caller=text, backend="memory://")


def test_a_caller_function_is_a_spec_too_equal_to_itself_and_async_when_it_is() -> None:
    def tenant(scope: object) -> str:
        return "acme"

    async def user(scope: object) -> str:
        return "u1"

    assert parse_caller(tenant) == parse_caller(tenant) != parse_caller(user)
    assert parse_caller(tenant).kind == "custom"
    assert not parse_caller(tenant).is_async
    assert parse_caller(user).is_async
    assert str(parse_caller(tenant)).endswith("tenant")
    assert parse_caller(parse_caller(tenant)) == parse_caller(tenant)


def test_settings_hold_the_parsed_caller_and_print_its_text() -> None:
    settings = ToolkitSettings(cache={"caller": "header:X-User"}, flags={"caller": "api_key"})
    assert settings.model_dump(mode="json")["cache"]["caller"] == "header:x-user"
    assert settings.model_dump(mode="json")["flags"]["caller"] == "api_key"
    assert settings.model_dump(mode="json")["ratelimit"]["caller"] == "client"
    assert settings.cache.model_dump()["caller"] == parse_caller("header:x-user")


def test_an_async_flags_caller_is_refused_at_startup() -> None:
    async def user(scope: object) -> str:
        return "u1"

    with pytest.raises(ConfigurationError, match=r"flags.caller=.*user: an async function"):
        toolkit.install(FastAPI(), ToolkitSettings(flags={"caller": user}))


# --- what a failing caller function resolves to --------------------------------------------------


def _broken(scope: object) -> str:
    raise LookupError("no tenant")


async def _broken_async(scope: object) -> str:
    raise LookupError("no tenant")


@pytest.mark.parametrize("function", [_broken, _broken_async], ids=["sync", "async"])
@pytest.mark.parametrize(("on_error", "expected"), [("client", "client:192.0.2.8"), ("none", None)])
def test_a_failing_caller_function_resolves_as_on_error_says_and_is_recorded(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    function: object,
    on_error: OnError,
    expected: str | None,
) -> None:
    """client: the client address (the rate limiter, flags); none: no caller (the caches,
    which then share nothing). Either way the request never fails."""
    resolver = CallerResolver(function, ClientAddress(), hook="test.caller", on_error=on_error)  # type: ignore[call-overload]
    scope = http_scope(client=("192.0.2.8", 1))
    with tracer_provider.get_tracer("t").start_as_current_span("request"):
        assert asyncio.run(resolver(scope)) == expected
        if function is _broken:
            assert resolver.resolve(scope) == expected
    events = [e for span in span_exporter.get_finished_spans() for e in span.events]
    assert {e.attributes[names.HOOK] for e in events} == {"test.caller"}


@pytest.mark.parametrize("on_error", ["client", "none"])
def test_a_caller_that_gives_nothing_is_the_client_address_whatever_on_error_says(
    on_error: OnError,
) -> None:
    """None from a function, or no header sent, is no failure: the client is the caller."""
    scope = http_scope(client=("192.0.2.8", 1))
    for spec in ("api_key", "header:X-User", lambda scope: None):
        resolver = CallerResolver(spec, ClientAddress(), on_error=on_error)  # type: ignore[call-overload]
        assert resolver.resolve(scope) == "client:192.0.2.8"


def test_on_error_is_one_of_its_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"on_error='fallback': 'client' .* or 'none'"):
        CallerResolver("client", ClientAddress(), on_error="fallback")  # type: ignore[call-overload]


def test_the_caches_use_on_error_none_and_the_limiter_and_flags_client() -> None:
    cache = ResponseCacheMiddleware(_app, caller=_broken, backend="memory://")
    scope = http_scope(client=("192.0.2.8", 1))
    assert cache.store.caller.resolve(scope) is None
    limiter = RateLimitMiddleware(_app, limit="1/second", caller=_broken)
    assert limiter._default_caller.resolve(scope) == "client:192.0.2.8"
    store = toolkit.install(FastAPI(), ToolkitSettings(flags={"caller": _broken})).flags
    assert store.caller_of(scope) == "client:192.0.2.8"


@pytest.mark.anyio
async def test_a_failing_caller_function_never_shares_an_entry_between_callers() -> None:
    """Response cache and @cached(per_caller=True) alike: with the caller unknown, every
    request goes to the origin, never to an entry another caller filled."""
    app = FastAPI()
    runs = itertools.count(1)

    @toolkit.cached(ttl="1m", per_caller=True, namespace="test")
    async def remember(question: str) -> int:
        return next(runs)

    @app.get("/ask")
    async def ask(q: str) -> dict[str, int]:
        return {"answer": await remember(q)}

    @app.get("/page")
    async def page() -> dict[str, int]:
        return {"run": next(runs)}

    toolkit.install(
        app,
        ToolkitSettings(
            cache={"caller": _broken, "routes": {"/page": {"ttl": 60}}},
            telemetry={"prometheus": False},
        ),
    )
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        pages = [await http.get("/page") for _ in range(2)]
        answers = [(await http.get("/ask", params={"q": "q"})).json() for _ in range(2)]
    assert [p.headers["x-cache"] for p in pages] == ["BYPASS", "BYPASS"]
    assert len({p.json()["run"] for p in pages}) == 2
    assert answers[0] != answers[1]


# --- the old names: deprecated aliases that warn, naming the new one ----------------------------


def _renamed_settings() -> list[tuple[str, str, str | None, str]]:
    """(section, field, entry, old name) for every old name of a caller setting, from the
    models' aliases (the ``renamed`` of each section)."""
    found = []
    for section, name, entry in CALLER_SETTINGS:
        model: Any = ToolkitSettings.model_fields[section].annotation
        if entry is not None:
            model = get_args(model.model_fields[name].annotation)[1]
            model = get_args(model)[0] if hasattr(model, "__metadata__") else model
        found += [
            (section, name, entry, old)
            for old, new in model.renamed.items()
            if new == (entry or name)
        ]
    return found


RENAMED = _renamed_settings()


def _renamed_id(renamed: tuple[str, str, str | None, str]) -> str:
    section, name, entry, old = renamed
    return f"{section}.{name}.{old}" if entry else f"{section}.{old}"


def _sources(
    section: str, name: str, entry: str | None, old: str, value: str
) -> tuple[str, str, str, dict[str, Any]]:
    """The variable, its value, a toolkit.toml and a keyword argument setting the caller
    under its old name."""
    if entry is None:
        return (
            f"TOOLKIT_{section.upper()}__{old.upper()}",
            value,
            f'[{section}]\n{old} = "{value}"\n',
            {old: value},
        )
    route = {"limit": "5/minute", old: value}
    return (
        f"TOOLKIT_{section.upper()}__{name.upper()}",
        json.dumps({ROUTE: route}),
        f'[{section}.{name}."{ROUTE}"]\nlimit = "5/minute"\n{old} = "{value}"\n',
        {name: {ROUTE: route}},
    )


def test_every_old_name_of_a_caller_setting_is_an_alias() -> None:
    assert sorted(_renamed_id(renamed) for renamed in RENAMED) == [
        "cache.identity",
        "flags.subject",
        "ratelimit.key",
        "ratelimit.routes.key",
    ]


@pytest.mark.parametrize("renamed", RENAMED, ids=_renamed_id)
def test_an_old_setting_name_still_works_in_every_source_and_warns_naming_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    renamed: tuple[str, str, str | None, str],
) -> None:
    """The old variable passes the unknown-variable check, and the old name is read in the
    environment, toolkit.toml and keyword arguments; an old attribute still answers."""
    section, name, entry, old = renamed
    new = entry or name
    spec = parse_caller("api_key")
    variable, value, toml, argument = _sources(section, name, entry, old, "api_key")
    warning = f"{old} is deprecated: use .*{new}"
    check_environment({variable: value})  # a setting: not refused as unknown
    with monkeypatch.context() as env:
        env.setenv(variable, value)
        with pytest.warns(DeprecationWarning, match=warning):
            assert _read(ToolkitSettings(), section, name, entry) == spec
    config = tmp_path / "toolkit.toml"
    config.write_text(toml)
    with monkeypatch.context() as env:
        env.setenv("TOOLKIT_CONFIG", str(config))
        with pytest.warns(DeprecationWarning, match=warning):
            assert _read(ToolkitSettings(), section, name, entry) == spec
    with pytest.warns(DeprecationWarning, match=warning):
        settings = ToolkitSettings(**{section: argument})
    holder = getattr(settings, section)
    holder = holder if entry is None else holder.routes[ROUTE]
    with pytest.warns(DeprecationWarning, match=f"{type(holder).__name__}.{old} is deprecated"):
        assert getattr(holder, old) == spec


@pytest.mark.parametrize("renamed", RENAMED, ids=_renamed_id)
def test_a_bad_value_under_an_old_name_is_named_by_it_and_both_names_are_refused(
    monkeypatch: pytest.MonkeyPatch, renamed: tuple[str, str, str | None, str]
) -> None:
    section, name, entry, old = renamed
    new = entry or name
    variable, value, _, argument = _sources(section, name, entry, old, "ip")
    with monkeypatch.context() as env:
        env.setenv(variable, value)
        with (
            pytest.warns(DeprecationWarning, match=f"{old} is deprecated"),
            pytest.raises(ConfigurationError) as caught,
        ):
            ToolkitSettings()
    shown = variable if entry is None else f"{variable} (entry {ROUTE}.{old})"
    assert f"{shown} 'ip': 'ip' is not a caller" in str(caught.value)
    both = argument if entry is None else argument[name][ROUTE]
    both[new] = "client"
    with pytest.raises(ConfigurationError, match=f"{old} and {new} are one setting"):
        ToolkitSettings(**{section: argument})


def test_old_argument_names_still_work_and_warn_naming_the_new_one() -> None:
    scope = http_scope(client=("192.0.2.8", 1), headers=[("x-api-key", "k")])
    with pytest.warns(
        DeprecationWarning, match="key= of RateLimitMiddleware is deprecated: use caller="
    ):
        limiter = RateLimitMiddleware(_app, limit="1/second", key="api_key")
    assert limiter.settings.caller == parse_caller("api_key")
    with pytest.warns(
        DeprecationWarning, match="identity= of ResponseCacheMiddleware .* use caller="
    ):
        cache = ResponseCacheMiddleware(_app, identity="api_key", backend="memory://")
    assert cache.settings.caller == parse_caller("api_key")
    resolver = CallerResolver("api_key", ClientAddress(), hook="flags.caller")
    with pytest.warns(DeprecationWarning, match="subject= of FlagStore .* use caller="):
        store = FlagStore(subject=resolver)
    assert store.caller_of(scope) == "api_key:k"
    with pytest.warns(
        DeprecationWarning, match="FlagStore.subject_of is deprecated: use FlagStore.caller_of"
    ):
        assert store.subject_of(scope) == "api_key:k"
    for ask in (store.evaluate, store.variant, store.is_enabled):
        with pytest.warns(
            DeprecationWarning, match="subject= of FlagStore.evaluate/variant/is_enabled"
        ):
            ask("ratelimit", subject="api_key:k")
    for ask in (toolkit.flags.evaluate, toolkit.flags.variant, toolkit.flags.is_enabled):
        with pytest.warns(
            DeprecationWarning, match="subject= of toolkit.flags.evaluate/variant/is_enabled"
        ) as warned:
            ask("ratelimit", subject="api_key:k")
        assert [w.filename for w in warned] == [__file__]  # points at the caller's line
    with pytest.warns(
        DeprecationWarning, match="CacheStore.identity is deprecated: use CacheStore.caller"
    ):
        assert cache.store.identity is cache.store.caller
    with pytest.warns(DeprecationWarning, match="CacheStore.identity is deprecated"):
        cache.store.identity = resolver  # type: ignore[assignment]
    assert cache.store.caller is resolver
    with pytest.warns(DeprecationWarning, match="key= of Policy is deprecated: use caller="):
        policy = Policy.parse("p", "1/second", key=resolver)
    assert policy.caller is resolver
    with pytest.warns(DeprecationWarning, match="Policy.key is deprecated: use Policy.caller"):
        assert policy.key is resolver
    with pytest.raises(ConfigurationError, match="key= and caller= are one argument"):
        RateLimitMiddleware(_app, limit="1/second", key="api_key", caller="client")


def test_the_old_public_names_of_the_caller_types_still_import_and_warn() -> None:
    import toolkit.identity
    import toolkit.ratelimit
    import toolkit.settings

    for module, old, new in [
        (toolkit.identity, "KeyResolver", "CallerResolver"),
        (toolkit.identity, "KeyFunction", "CallerFunction"),
        (toolkit.ratelimit, "KeyFunction", "CallerFunction"),
        (toolkit.settings, "KeySpec", "toolkit.identity.CallerSpec"),
    ]:
        replacement = new if "." in new else f"{module.__name__}.{new}"
        with pytest.warns(
            DeprecationWarning,
            match=f"{module.__name__}.{old} is deprecated: use {replacement}",
        ):
            found = getattr(module, old)
        owner, _, name = replacement.rpartition(".")
        assert found is getattr(importlib.import_module(owner), name)
    with pytest.raises(AttributeError):
        toolkit.identity.Nothing  # type: ignore[attr-defined]  # noqa: B018
