"""Whose request it is: the ``caller`` grammar, parsed once, and the one resolver of it.

The rate limiter charges a caller's budget, the caches keep a caller's entries apart and
flag rollouts bucket by caller, and all three name it the same way: ``client``, ``api_key``,
``header:<Name>``, or in code a function of the ASGI scope. :func:`parse_caller` reads that
grammar for the settings model and for arguments alike; :class:`CallerResolver` finds a
request's caller from it.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, TypeAlias, TypeVar, cast, overload

from opentelemetry import trace
from starlette.types import Scope

from toolkit._memo import memoize_short
from toolkit.errors import ConfigurationError
from toolkit.identity._client import ClientAddress
from toolkit.telemetry import names

CallerFunction: TypeAlias = Callable[[Scope], "str | Awaitable[str | None] | None"]
"""Given the ASGI scope, the caller's identity, or None to fall back to the client address."""

OnError: TypeAlias = Literal["client", "none"]
"""What a caller function that raises resolves to. ``"client"``: the client address, as when
it returns None (the rate limiter and flags: the request is still charged and bucketed).
``"none"``: no caller at all (the caches: the request is neither served from nor stored in an
entry, so a failing function can never put two callers under one)."""

_GRAMMAR = "'client', 'api_key', 'header:<Header-Name>' or, in code, a function of the ASGI scope"


class CallerSpec:
    """How a request's caller is found: a ``caller`` setting or argument, parsed. Equal specs
    find equal callers; ``str()`` gives the setting's text back.

    Args:
        kind: what the identities of this caller start with (``client``, ``api_key``,
            ``header:x-user-id``, ``custom`` for a function), so that two kinds never collide.
        headers: request headers (lower case) read in order; the first non-empty one is the
            caller. None of them sent, or none named, falls back to the client address.
        function: read instead of headers; sync or async.
    """

    __slots__ = ("function", "headers", "is_async", "kind")

    def __init__(
        self, kind: str, headers: tuple[bytes, ...] = (), function: CallerFunction | None = None
    ) -> None:
        self.kind = kind
        self.headers = headers
        self.function = function
        self.is_async = function is not None and (
            inspect.iscoroutinefunction(function)
            or inspect.iscoroutinefunction(getattr(function, "__call__", None))  # noqa: B004 - async callable objects
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallerSpec):
            return NotImplemented
        return (self.kind, self.headers, self.function) == (
            other.kind,
            other.headers,
            other.function,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.headers, self.function))

    def __str__(self) -> str:
        """The setting's text (``api_key``, ``header:x-user-id``), or the function's name."""
        if self.function is None:
            return self.kind
        return str(getattr(self.function, "__qualname__", self.function))

    def __repr__(self) -> str:
        return f"CallerSpec({self.function if self.function is not None else self.kind!r})"


CLIENT: CallerSpec = CallerSpec("client")
"""The client address (:class:`ClientAddress`): the rate limiter's and the flags' default."""


def parse_caller(value: object) -> CallerSpec:
    """The caller ``value`` names: ``"client"``, ``"api_key"`` (``X-API-Key``, else
    ``Authorization``), ``"header:<Name>"``, a :data:`CallerFunction`, or a :class:`CallerSpec`
    (returned as it is). The validator of every ``caller`` setting, and what every ``caller=``
    argument goes through.

    Raises:
        ValueError: ``value`` names no caller (the message says what would).
    """
    if isinstance(value, CallerSpec):
        return value
    if callable(value):
        return CallerSpec("custom", function=value)
    if value == "client":
        return CLIENT
    if value == "api_key":
        return CallerSpec("api_key", (b"x-api-key", b"authorization"))
    if isinstance(value, str) and value.startswith("header:") and value[7:].strip():
        name = value[7:].strip().lower()
        return CallerSpec(f"header:{name}", (name.encode("latin-1"),))
    raise ValueError(f"{value!r} is not a caller; use {_GRAMMAR}")


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


Identity = TypeVar("Identity", str, "str | None")
"""What a resolver gives: always an identity (``on_error="client"``), or None too."""


class CallerResolver(Generic[Identity]):
    """Finds the caller of a request: its identity, prefixed with its kind (``api_key:...``,
    ``client:203.0.113.7``) so that an API key can never collide with an address.

    A caller none of whose headers were sent, or whose function returns None, is the client
    address. A function that raises is recorded on the current span and resolves as
    ``on_error`` says; it never fails the request.

    Args:
        spec: what :func:`parse_caller` reads: ``"client"``, ``"api_key"``,
            ``"header:<Name>"``, a :data:`CallerFunction` (sync or async), or a
            :class:`CallerSpec`.
        client: how the client address is found (trusted proxies).
        hook: the name a failing function is recorded under on the span (``toolkit.hook``).
        on_error: see :data:`OnError`.

    Raises:
        ConfigurationError: ``spec`` names no caller, or ``on_error`` is no choice.
    """

    __slots__ = (
        "_client",
        "_function",
        "_headers",
        "_none_on_error",
        "hook",
        "is_async",
        "kind",
        "spec",
    )

    @overload
    def __init__(
        self: CallerResolver[str],
        spec: CallerSpec | str | CallerFunction,
        client: ClientAddress,
        *,
        hook: str = ...,
        on_error: Literal["client"] = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: CallerResolver[str | None],
        spec: CallerSpec | str | CallerFunction,
        client: ClientAddress,
        *,
        hook: str = ...,
        on_error: Literal["none"],
    ) -> None: ...

    def __init__(
        self,
        spec: CallerSpec | str | CallerFunction,
        client: ClientAddress,
        *,
        hook: str = "ratelimit.caller",
        on_error: OnError = "client",
    ) -> None:
        try:
            self.spec = parse_caller(spec)
        except ValueError as exc:
            raise ConfigurationError(f"caller: {exc}") from None
        if on_error not in ("client", "none"):
            raise ConfigurationError(
                f"on_error={on_error!r}: 'client' (fall back to the client address) or 'none' "
                "(no caller: share nothing)"
            )
        self._client = client
        self.hook = hook
        self._none_on_error = on_error == "none"
        self._function: Any = self.spec.function
        self._headers = self.spec.headers
        self.is_async = self.spec.is_async
        self.kind = self.spec.kind

    async def __call__(self, scope: Scope) -> Identity:
        """The caller of the request; awaits the function when it is async."""
        if not self.is_async:
            return self.resolve(scope)
        try:
            value = await self._function(scope)
        except Exception as exc:  # a user hook must never fail the request
            return self._failed(exc, scope)
        return self._identity(value, scope)

    def resolve(self, scope: Scope) -> Identity:
        """The caller, without awaiting: for sync functions and the built-in callers.

        Raises:
            ConfigurationError: the function is async.
        """
        value: object = None
        if self._function is not None:
            if self.is_async:
                raise ConfigurationError(f"{self.hook}: this caller function must not be async")
            try:
                value = self._function(scope)
            except Exception as exc:  # a user hook must never fail the request
                return self._failed(exc, scope)
        else:
            for name in self._headers:
                value = header_value(scope, name)
                if value:
                    break
        return self._identity(value, scope)

    def _identity(self, value: object, scope: Scope) -> Identity:
        if value:
            return f"{self.kind}:{value}"
        return f"client:{self._client(scope)}"

    def _failed(self, exc: Exception, scope: Scope) -> Identity:
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc, attributes={names.HOOK: self.hook})
        if self._none_on_error:
            return cast(Identity, None)
        return f"client:{self._client(scope)}"
