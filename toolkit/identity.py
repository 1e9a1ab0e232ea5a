"""Who a request is from: the client address, an API key, a header, or your function.

Rate limiting charges budgets to these identities and feature flags bucket rollouts by them.

Identities are prefixed with their kind (``client:``, ``api_key:``...) so an API key can never
collide with an address, and they are hashed before they reach storage or a span.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

from opentelemetry import trace
from starlette.types import Scope

from toolkit._memo import memoize_short
from toolkit.errors import ConfigurationError
from toolkit.settings import DEFAULT_PROXY_HEADER, IPNetwork, ProxyHeader, RateLimitSettings
from toolkit.telemetry import names

KeyFunction: TypeAlias = Callable[[Scope], "str | Awaitable[str | None] | None"]
"""Given the ASGI scope, the caller's identity, or None to fall back to the client address."""

_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def header_value(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


@memoize_short(8192, 256)  # the same callers come back request after request; in bytes, bounded
def digest(*parts: str) -> str:
    """A short stable hash of ``parts``: what storage keys and spans carry instead of identities."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).hexdigest()


class ClientAddress:
    """The address of the client: the peer's, or behind trusted proxies the one they saw.

    Only the header the proxies write (``header``: ``x-forwarded-for``, ``forwarded`` as in
    RFC 7239, or ``x-real-ip``) is read, and only when the peer is one of
    ``trusted_proxies``; the other two headers are the client's own to write and are
    ignored. Its hops are read from the right, each proxy having appended the address it saw,
    and the first hop that is not a trusted proxy is the client: anything to its left was sent
    by the client and could be forged. A hop that is not an address (``unknown``, an
    obfuscated name, an element with no ``for``, garbage) is not a trusted proxy either, so
    the walk stops there and that hop is the identity: clients the proxy could not name share
    one, and no one can reach past it. When every hop is a trusted proxy, the client is the
    leftmost; when the header is absent, the peer.

    Args:
        trusted_proxies: addresses or CIDRs of the proxies; none believes no header.
        header: the header they write, lower case.
    """

    __slots__ = ("_header", "_hop", "_split", "_trusted")

    def __init__(
        self,
        trusted_proxies: Iterable[IPNetwork | str] = (),
        header: ProxyHeader = DEFAULT_PROXY_HEADER,
    ) -> None:
        split = _SPLITTERS.get(header)
        if split is None:
            raise ConfigurationError(
                f"proxy_header={header!r} is not one of {sorted(_SPLITTERS)}; name the header "
                "your proxy writes, e.g. proxy_header='x-forwarded-for'"
            )
        self._trusted = tuple(ipaddress.ip_network(net, strict=False) for net in trusted_proxies)
        self._header = header.encode("latin-1")
        self._split = split
        # Parsing an address costs microseconds and the same few proxies and clients recur:
        # remember the verdict per text, bounded so forged hops cannot grow it without limit.
        self._hop = memoize_short(4096, 64)(self._read_hop)

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> ClientAddress:
        """The client address as the settings describe it: what the rate limiter, the
        response cache's ``client`` identity and the flags' ``client`` subject all use."""
        return cls(settings.trusted_proxies, settings.proxy_header)

    def __call__(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        if not self._trusted or peer is None or not self._verdict(peer)[1]:
            return peer
        hops: list[str] = []
        for key, value in scope["headers"]:
            if key == self._header:  # repeated lines form one list, in order (RFC 9110, 5.3)
                hops += self._split(value.decode("latin-1"))
        for hop in reversed(hops):
            address, trusted = self._verdict(hop)
            if not trusted:
                # Written by the trusted proxy to its right: what that proxy saw.
                return address
        return self._verdict(hops[0])[0] if hops else peer

    def _verdict(self, text: str) -> tuple[str, bool]:
        if len(text) > _LONGEST_HOP:  # not an address; not worth a place in the cache
            return text, False
        return self._hop(text)

    def _read_hop(self, text: str) -> tuple[str, bool]:
        """The hop as an identity (the normalised address, else the text) and whether it is
        one of the trusted proxies."""
        address = _parse_ip(text)
        if address is None:
            return text or "unknown", False
        return str(address), any(address in net for net in self._trusted)


_LONGEST_HOP = 100
"""Longer than any address with a port and a zone: ``[v6%zone]:port``."""


def _split_list(value: str) -> list[str]:
    """X-Forwarded-For and X-Real-IP: addresses separated by commas."""
    return [hop.strip() for hop in value.split(",")]


def _split_forwarded(value: str) -> list[str]:
    """Forwarded (RFC 7239): the ``for`` of each element, "" for an element without one.

    Elements are split at every comma, quoted or not: no node contains one, and a quote the
    client leaves open must not swallow the elements the proxies appended after it.
    """
    hops = []
    for element in value.split(","):
        hop = ""
        for pair in element.split(";"):
            name, _, node = pair.partition("=")
            if name.strip().lower() == "for":
                hop = node.strip().strip('"').strip()
                break
        hops.append(hop)
    return hops


_SPLITTERS: dict[str, Callable[[str], list[str]]] = {
    "x-forwarded-for": _split_list,
    "forwarded": _split_forwarded,
    "x-real-ip": _split_list,
}


def _parse_ip(text: str) -> _IPAddress | None:
    """An address from a header hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``[::1]`` or
    ``::1``. An IPv4 address mapped into IPv6 (``::ffff:1.2.3.4``, as dual-stack servers
    report IPv4 peers) is the IPv4 address."""
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        text = host
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class KeyResolver:
    """Resolves the identity a request is limited by: the configured key, else the client
    address. A key function that raises is recorded on the span and falls back the same way;
    it never fails the request.

    Args:
        spec: ``"client"``, ``"api_key"`` (``X-API-Key``, else ``Authorization``),
            ``"header:<Name>"``, or a :data:`KeyFunction` (sync or async).
        client: how the client address is found (trusted proxies).
        hook: the name a failing key function is recorded under on the span.
    """

    __slots__ = ("_client", "_function", "_headers", "hook", "is_async", "kind")

    def __init__(
        self, spec: str | KeyFunction, client: ClientAddress, *, hook: str = "ratelimit.key"
    ) -> None:
        self._client = client
        self.hook = hook
        self._function: Any = None
        self._headers: tuple[bytes, ...] = ()
        self.is_async = False
        if callable(spec):
            self.kind = "custom"
            self._function = spec
            self.is_async = inspect.iscoroutinefunction(spec) or inspect.iscoroutinefunction(
                getattr(spec, "__call__", None)  # noqa: B004 - async callable objects
            )
        elif spec == "client":
            self.kind = "client"
        elif spec == "api_key":
            self.kind = "api_key"
            self._headers = (b"x-api-key", b"authorization")
        elif spec.startswith("header:") and spec[7:].strip():
            name = spec[7:].strip().lower()
            self.kind = f"header:{name}"
            self._headers = (name.encode("latin-1"),)
        else:
            raise ConfigurationError(
                f"key={spec!r} is not a key; use 'client', 'api_key', 'header:<Header-Name>' "
                "or a function of the ASGI scope"
            )

    async def __call__(self, scope: Scope) -> str:
        """The identity of the request; awaits the key function when it is async."""
        if not self.is_async:
            return self.resolve(scope)
        try:
            value = await self._function(scope)
        except Exception as exc:  # a user hook must never fail the request
            _record_failure(exc, self.hook)
            value = None
        return self._identity(value, scope)

    def resolve(self, scope: Scope) -> str:
        """The identity, without awaiting: for sync key functions and the built-in keys."""
        value: str | None = None
        if self._function is not None:
            if self.is_async:
                raise ConfigurationError(f"{self.hook}: this key function must not be async")
            try:
                value = self._function(scope)
            except Exception as exc:  # a user hook must never fail the request
                _record_failure(exc, self.hook)
                value = None
        else:
            for name in self._headers:
                value = header_value(scope, name)
                if value:
                    break
        return self._identity(value, scope)

    def _identity(self, value: str | None, scope: Scope) -> str:
        if value:
            return f"{self.kind}:{value}"
        return f"client:{self._client(scope)}"


def _record_failure(exc: Exception, hook: str) -> None:
    """Put a hook's exception on the current span; the caller falls back."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc, attributes={names.HOOK: hook})
