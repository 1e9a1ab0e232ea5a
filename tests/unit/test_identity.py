"""Keys: who a request is charged to, and why forged proxy headers change nothing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.asgi import http_scope
from toolkit.identity import ClientAddress, KeyResolver, digest
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


@settings(max_examples=300, deadline=None)
@given(
    hops=st.lists(forged_hop, min_size=1, max_size=5),
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
)
def test_forwarded_headers_from_an_untrusted_peer_never_change_the_key(
    hops: list[str], header: str
) -> None:
    """A client talking to us directly cannot pick its key by sending proxy headers."""
    value = ", ".join(hops) if header == "x-forwarded-for" else ", ".join(f"for={h}" for h in hops)
    scope = http_scope(client=("198.51.100.9", 4000), headers=[(header, value)])
    assert resolve("client", scope, trusted=("10.0.0.0/8",)) == "client:198.51.100.9"


@settings(max_examples=300, deadline=None)
@given(forged=st.lists(forged_hop, max_size=4))
def test_behind_a_trusted_proxy_only_the_hop_it_wrote_counts(forged: list[str]) -> None:
    """Whatever the client prepends, the key is the address the trusted proxy saw."""
    chain = ", ".join([*forged, "192.0.2.44"])
    scope = http_scope(client=(PROXY, 4000), headers=[("x-forwarded-for", chain)])
    assert resolve("client", scope, trusted=("10.0.0.0/8",)) == "client:192.0.2.44"


def test_the_chain_is_read_through_every_trusted_proxy() -> None:
    scope = http_scope(
        client=(PROXY, 1),
        headers=[("x-forwarded-for", "6.6.6.6, 192.0.2.1"), ("x-forwarded-for", "10.1.1.1")],
    )
    assert resolve("client", scope, trusted=("10.0.0.0/8",)) == "client:192.0.2.1"


def test_forwarded_header_wins_and_is_parsed_with_ports_and_ipv6() -> None:
    scope = http_scope(
        client=(PROXY, 1),
        headers=[
            ("x-forwarded-for", "7.7.7.7"),
            ("forwarded", 'for=6.6.6.6;proto=https, for="[2001:db8:cafe::17]:4711"'),
        ],
    )
    assert resolve("client", scope, trusted=("10.0.0.0/8",)) == "client:2001:db8:cafe::17"


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
