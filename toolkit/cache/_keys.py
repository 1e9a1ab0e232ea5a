"""Canonical forms of what selects a cached value, so that equal requests meet one entry.

Two inputs that the application reads as equal should give one key (a better hit ratio), and
two inputs it may read differently must never share one (a poisoned or leaked entry). Each
form below errs on the second side: when in doubt, the inputs stay apart.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final
from urllib.parse import unquote_plus

import msgpack  # type: ignore[import-untyped]
from starlette.types import Scope

from toolkit._memo import memoize_short
from toolkit.identity import CallerResolver, CallerSpec, ClientAddress


def canonical_json(value: Any) -> bytes:
    """``value`` as JSON in one canonical form: object keys sorted, no whitespace, UTF-8 with
    non-ASCII characters as themselves. Values that differ only in key order or spacing give
    the same bytes; any other difference gives different bytes.

    Raises:
        ValueError: NaN or an infinity (not JSON), or a recursion too deep to serialise.
        TypeError: a value JSON has no form for, or object keys of mixed types.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    # json.loads accepts lone surrogates ("\ud800"); keep them distinct rather than failing.
    return text.encode("utf-8", "surrogatepass")


@memoize_short(4096, 512)  # the same few query strings come back request after request
def canonical_query(query_string: bytes) -> bytes:
    """The query with its parameters ordered by name, each kept exactly as sent.

    Parameters with different names commute (``?a=1&b=2`` is ``?b=2&a=1``), but repeated ones
    keep their order (``?a=1&a=2`` is not ``?a=2&a=1``: an app reading the list, or the last
    value, sees a difference). Names are compared as the app decodes them, so ``%61`` and
    ``a`` stay in their relative order too; the raw text is kept, so spellings the app might
    decode differently (``%20`` and ``+``, invalid UTF-8) never merge.
    """
    if not query_string:
        return b""
    parts = query_string.split(b"&")
    if len(parts) == 1:
        return query_string
    # sorted() is stable: parameters whose decoded names are equal keep their order.
    parts.sort(key=_decoded_name)
    return b"&".join(parts)


def _decoded_name(part: bytes) -> str:
    return unquote_plus(part.partition(b"=")[0].decode("latin-1"))


KEY_DIGEST_BYTES: Final = 16
"""Bytes of the blake2b digest that ends a ``@cached`` or ``@cache_embeddings`` key."""


def digest_key(namespace: str, parts: Any) -> str:
    """The storage key for ``parts`` (any msgpack-able structure) under ``namespace``: a hash,
    so that no identity, path or body reaches storage, a span or a log in clear."""
    material = msgpack.packb(parts, use_bin_type=True)
    return f"{namespace}:{hashlib.blake2b(material, digest_size=20).hexdigest()}"


# --- whose entry it is -----------------------------------------------------------------------

CALLER_HOOK: Final = "cache.caller"
"""What a failing caller function of the caches is recorded as on the span (``toolkit.hook``)."""
CREDENTIAL_HEADERS: Final = (b"authorization", b"cookie")
"""Who is asking when ``cache.caller`` is unset: every value of these headers, in order
(every cookie: a session cookie you do not know about still separates callers)."""


def _credentials(scope: Scope) -> str:
    sent = [
        [name.decode("latin-1"), value.decode("latin-1")]
        for name, value in scope["headers"]
        if name in CREDENTIAL_HEADERS
    ]
    return canonical_json(sent).decode()


CREDENTIALS: Final = CallerSpec("headers", function=_credentials)
"""The caches' default caller: the :data:`CREDENTIAL_HEADERS` sent, as a JSON list (``[]``
for none: callers without credentials are one caller, as they share one response). The
response cache puts these headers in the key itself; ``@cached(per_caller=True)`` resolves
them through :data:`DEFAULT_CALLER`."""
DEFAULT_CALLER: Final = CallerResolver(
    CREDENTIALS, ClientAddress(), hook=CALLER_HOOK, on_error="none"
)
"""A store's caller until a response cache sets its own (:attr:`CacheStore.caller`)."""
