"""The client address: the peer's, or behind trusted proxies the address they saw.

Every capability that falls back to "the client" (the rate limiter, the caches, flag
rollouts) reads it the same way, from the ``ratelimit`` section's ``trusted_proxies`` and
``proxy_header``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Literal, TypeAlias

from starlette.types import Scope

from toolkit._deprecated import keyword_only
from toolkit._memo import memoize_short
from toolkit.errors import ConfigurationError

if TYPE_CHECKING:
    from toolkit.settings import RateLimitSettings

ProxyHeader = Literal["x-forwarded-for", "forwarded", "x-real-ip"]
DEFAULT_PROXY_HEADER: ProxyHeader = "x-forwarded-for"
IPNetwork: TypeAlias = IPv4Network | IPv6Network

_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


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

    @keyword_only("ClientAddress", "header")
    def __init__(
        self,
        trusted_proxies: Iterable[IPNetwork | str] = (),
        *,
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
        """The client address as the settings describe it: what every ``client`` caller
        uses, the rate limiter's, the caches' and the flag rollouts' alike."""
        return cls(settings.trusted_proxies, header=settings.proxy_header)

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
