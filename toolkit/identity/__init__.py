"""Who a request is from: its caller, as the rate limiter, the caches and flags all find it.

    RateLimitMiddleware(app, limit="60/minute", caller="api_key")
    TOOLKIT_CACHE__CALLER=header:X-User-Id
    TOOLKIT_FLAGS__CALLER=client

A caller is ``client`` (the client address, read past trusted proxies: :class:`ClientAddress`),
``api_key``, ``header:<Name>`` or, in code, a function of the ASGI scope. Identities are
prefixed with their kind (``client:``, ``api_key:``...) so an API key can never collide with an
address, and they are hashed before they reach storage or a span.
"""

from __future__ import annotations

import typing

from toolkit import _deprecated
from toolkit.identity._caller import (
    CLIENT,
    CallerFunction,
    CallerResolver,
    CallerSpec,
    OnError,
    digest,
    header_value,
    parse_caller,
)
from toolkit.identity._client import DEFAULT_PROXY_HEADER, ClientAddress, IPNetwork, ProxyHeader

__all__ = [
    "CLIENT",
    "DEFAULT_PROXY_HEADER",
    "CallerFunction",
    "CallerResolver",
    "CallerSpec",
    "ClientAddress",
    "IPNetwork",
    "OnError",
    "ProxyHeader",
    "digest",
    "header_value",
    "parse_caller",
]

if typing.TYPE_CHECKING:  # the old names, deprecated: a warning at run time
    KeyFunction: typing.TypeAlias = CallerFunction
    KeyResolver = CallerResolver
else:
    __getattr__ = _deprecated.renamed_attributes(
        __name__,
        {
            "KeyFunction": ("CallerFunction", CallerFunction),
            "KeyResolver": ("CallerResolver", CallerResolver),
        },
    )
