"""Content on a request to a cached route that does not key on the body: a GET or HEAD.

RFC 9110 (9.3.1): content in a GET has no generally defined semantics and cannot alter the
meaning or target of the request, and some implementations reject such a request outright
(it is a request smuggling vector). The cache refuses it with 400: served from the entry, an
app that reads the body anyway could have a response it shaped stored for everyone; sent to
the app uncached, it would let any client bypass the cache by adding a body.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

# HTTP/1.x frames a request body only with these headers (RFC 9112 6.3): without them there
# is none. HTTP/2 and 3 frame it themselves, so there only reading tells.
_FRAMED_BY_HEADERS: Final = frozenset({"1.0", "1.1"})

_PROBLEM: Final = json.dumps(
    {
        "title": "Bad Request",
        "status": 400,
        "detail": "This route's cached responses do not depend on a request body: send the "
        "request without content (RFC 9110, section 9.3.1).",
    },
    separators=(",", ":"),
).encode()


def has_content(scope: Scope) -> bool | None:
    """Whether the request carries content; None when only reading its body tells (chunked,
    or HTTP/2 and 3, where content needs no header)."""
    content = framed = False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            framed = True
            length = value.strip()
            if not length.isdigit() or length.lstrip(b"0"):  # no int(): it may be 5,000 digits
                content = True
    if framed or scope.get("http_version", "1.1") in _FRAMED_BY_HEADERS:
        return content
    return None


async def read_content(receive: Receive) -> tuple[list[Message], bool]:
    """Whether the body has a byte, reading no further than the first one, and the message
    to replay to the app (the empty ones before it carry nothing and are dropped)."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return [message], False  # the client left: nothing to refuse
        if message.get("body"):
            return [message], True
        if not message.get("more_body", False):
            return [message], False


async def refuse_content(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 400, problem details (RFC 9457), not to be stored by anyone."""
    response = Response(
        _PROBLEM,
        status_code=400,
        media_type="application/problem+json",
        headers={"cache-control": "no-store"},
    )
    await response(scope, receive, send)
