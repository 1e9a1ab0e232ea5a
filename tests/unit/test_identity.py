"""Keys: who a request is charged to, and why forged proxy headers change nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.asgi import http_scope, lifespan
from toolkit import ToolkitSettings
from toolkit.identity import ClientAddress, KeyResolver, digest
from toolkit.settings import ProxyHeader
from toolkit.telemetry import names

PROXY = "10.0.0.5"

forged_hop = st.one_of(
    st.ip_addresses().map(str),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)


def resolve(spec: object, scope: dict[str, object], trusted: tuple[str, ...] = ()) -> str:
    return asyncio.run(KeyResolver(spec, ClientAddress(trusted))(scope))  # type: ignore[arg-type]


def test_client_key_is_the_peer_address_by_default() -> None:
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
    return ClientAddress(trusted, header)(http_scope(client=(peer, 4000), headers=headers))


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
        ClientAddress(("10.0.0.0/8",), "x-client-ip")  # type: ignore[arg-type]
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


def test_a_header_key_cannot_collide_with_an_address() -> None:
    scope = http_scope(client=("192.0.2.3", 1), headers=[("x-tenant", "192.0.2.3")])
    assert resolve("header:X-Tenant", scope) != resolve("client", scope)


def test_key_functions_may_be_sync_or_async() -> None:
    async def tenant(scope: dict[str, object]) -> str:
        return "acme"

    assert resolve(lambda scope: "u1", http_scope()) == "custom:u1"
    assert resolve(tenant, http_scope()) == "custom:acme"
    assert resolve(lambda scope: None, http_scope(client=("192.0.2.8", 1))) == "client:192.0.2.8"


def test_a_failing_key_function_falls_back_and_is_recorded(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    def broken(scope: object) -> str:
        raise LookupError("no tenant")

    with tracer_provider.get_tracer("t").start_as_current_span("request"):
        assert resolve(broken, http_scope(client=("192.0.2.8", 1))) == "client:192.0.2.8"
    (event,) = span_exporter.get_finished_spans()[0].events
    assert event.name == "exception"
    assert event.attributes[names.HOOK] == "ratelimit.key"


def test_digests_are_stable_and_hide_the_identity() -> None:
    assert digest("default", "api_key:secret") == digest("default", "api_key:secret")
    assert digest("default", "api_key:secret") != digest("other", "api_key:secret")
    assert "secret" not in digest("default", "api_key:secret")
    assert len(digest("p", "x" * 10_000)) == 32


@pytest.mark.parametrize("spec", ["ip", "header:", "cookie:x"])
def test_unknown_key_specs_are_refused(spec: str) -> None:
    from toolkit import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a key"):
        KeyResolver(spec, ClientAddress())


@pytest.mark.anyio
async def test_installed_limiter_cache_and_flags_all_read_the_address_the_proxy_wrote() -> None:
    """Behind a proxy that appends X-Forwarded-For, a client that sends its own Forwarded
    (a new address each time) still spends one rate-limit budget, gets the cached response of
    its one identity and is one flag subject."""
    app = FastAPI()
    runs = itertools.count(1)

    @app.get("/who")
    async def who(request: Request) -> dict[str, object]:
        store = request.app.state.toolkit.store
        return {"subject": store.subject_of(request.scope), "run": next(runs)}

    toolkit.install(
        app,
        ToolkitSettings(
            ratelimit={"limit": "3/minute", "trusted_proxies": ["10.0.0.0/8"]},
            cache={"identity": "client", "routes": {"/who": {"ttl": 60}}},
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
    assert answers[0].json() == {"subject": "client:192.0.2.44", "run": 1}
    assert other.json() == {"subject": "client:192.0.2.45", "run": 2}
