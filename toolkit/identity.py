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
from toolkit.settings import IPNetwork
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
    """The address of the client.

    ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239) are believed only when the peer is one of
    ``trusted_proxies``, and then only as far as they were written by trusted proxies: the
    chain is read from the right, and the first hop that is not a trusted proxy is the client.
    Anything to its left was sent by the client and could be forged.
    """

    __slots__ = ("_hop", "_trusted")

    def __init__(self, trusted_proxies: Iterable[IPNetwork | str] = ()) -> None:
        self._trusted = tuple(ipaddress.ip_network(net, strict=False) for net in trusted_proxies)
        # Parsing an address costs microseconds and the same few proxies and clients recur:
        # remember the verdict per text, bounded so forged hops cannot grow it without limit.
        self._hop = memoize_short(4096, 64)(self._read_hop)

    def __call__(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        if not self._trusted or peer is None or not self._hop(peer)[1]:
            return peer
        hops = self._forwarded_chain(scope)
        for hop in reversed(hops):
            address, trusted = self._hop(hop)
            if not trusted:
                # Written by the trusted proxy to its right: what that proxy saw.
                return address
        return hops[0] if hops else peer

    def _read_hop(self, text: str) -> tuple[str, bool]:
        """The hop as an identity (the normalised address, else the text) and whether it is
        one of the trusted proxies."""
        address = _parse_ip(text)
        if address is None:
            return text, False
        return str(address), any(address in net for net in self._trusted)

    @staticmethod
    def _forwarded_chain(scope: Scope) -> list[str]:
        """Hops in order, client first: from Forwarded when present, else X-Forwarded-For.

        Repeated header lines form one list, in the order received (RFC 9110, 5.3).
        """
        forwarded: list[str] = []
        xff: list[str] = []
        for key, value in scope["headers"]:
            if key == b"forwarded":
                for element in value.decode("latin-1").split(","):
                    for pair in element.split(";"):
                        name, _, hop = pair.strip().partition("=")
                        if name.lower() == "for":
                            forwarded.append(hop.strip().strip('"'))
            elif key == b"x-forwarded-for":
                xff.extend(hop.strip() for hop in value.decode("latin-1").split(","))
        return [hop for hop in (forwarded or xff) if hop]


def _parse_ip(text: str) -> _IPAddress | None:
    """An address from a header hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80`` or ``::1``."""
    if text.startswith("["):
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


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
