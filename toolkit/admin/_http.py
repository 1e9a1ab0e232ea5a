"""What every admin route shares: problem answers raised as exceptions, the JSON bodies of
changes (refused unless they are JSON, and past a size), and JSON answers."""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from toolkit._problem import problem_response

MAX_BODY_BYTES = 64 * 1024
"""A change is a few dozen bytes of JSON; anything past this is refused unread (413)."""

# Values quoted back in a 422, shortened: a client's 400-digit number or 60 KiB string is not
# worth repeating in full.
QUOTE = reprlib.Repr()
QUOTE.maxstring = QUOTE.maxother = 60
QUOTE.maxlong = 40


class Problem(Exception):
    """An RFC 9457 problem answer, raised by a route before it responds."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self) -> Response:
        return problem_response(self.status, self.detail, headers=self.headers, **self.extensions)


def invalid(field: str, message: str) -> Problem:
    """422 naming the field of the body (or the query parameter) that is wrong."""
    return Problem(422, f"{field}: {message}", field=field)


def _not_json() -> Problem:
    return Problem(415, "changes take a JSON body: send 'content-type: application/json'")


async def json_body(request: Request, fields: set[str]) -> dict[str, Any]:
    """The write's JSON object with exactly ``fields``; with no fields (DELETE), no body at
    all is accepted too.

    Only JSON is accepted: an HTML form can send urlencoded, multipart or text/plain bodies
    cross-site without a CORS preflight, but never application/json. A write without a body
    and without a content type is what a cross-site ``fetch`` sends as a simple POST, which a
    method-override middleware could turn into a DELETE: it is refused when the browser says
    the request comes from another site (``Sec-Fetch-Site``).
    """
    content_type = request.headers.get("content-type")
    if content_type is None and not fields:
        if request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            raise Problem(403, "changes are not accepted from pages of other sites")
        if (await _read_body(request)).strip():
            raise _not_json()
        return {}
    if (content_type or "").partition(";")[0].strip().lower() != "application/json":
        raise _not_json()
    raw = await _read_body(request)
    if not raw.strip() and not fields:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8, or an integer past Python's 4300 digits
        raise invalid("body", "is not valid JSON") from None
    except RecursionError:
        raise invalid("body", "is nested too deeply; a change is one flat JSON object") from None
    if not isinstance(body, dict):
        raise invalid("body", f"must be a JSON object with {sorted(fields)}")
    missing, unknown = sorted(fields - body.keys()), sorted(body.keys() - fields)
    if missing:
        raise invalid(missing[0], "is required")
    if unknown:
        raise invalid(unknown[0], f"is not accepted here; send only {sorted(fields)}")
    return body


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 past ``MAX_BODY_BYTES`` before it is all read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Problem(413, f"a change is a JSON object of at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(data: Mapping[str, Any]) -> Response:
    # Variant values are whatever the application declared: show the odd ones as text.
    return Response(json.dumps(data, default=str), media_type="application/json")
