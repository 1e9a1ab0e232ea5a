"""The toolkit's own HTTP error answers: problem details (RFC 9457).

The admin routes and ``/metrics`` answer bad requests with :func:`problem_response`;
``install()`` registers exception handlers that answer a pool's or a breaker's refusal with
:func:`service_unavailable`, a 503 in the same shape as the rate limiter's answers, never a 500
with a traceback. The rate limiter sends its 429s and 503s straight to ASGI, with bodies from
:func:`problem_body`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from starlette.responses import Response

REDUCED_CAPACITY: Final = (
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
)
QUOTA_EXCEEDED: Final = "https://iana.org/assignments/http-problem-types#quota-exceeded"
_TITLES: Final = {status.value: status.phrase for status in HTTPStatus}


def problem_body(
    status: int,
    detail: str,
    type: str = "about:blank",  # the member's name in RFC 9457
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON of a problem: ``type``, ``status`` and its title, ``detail`` (what was wrong
    and what would work), then any ``extensions`` (``{"field": "limit"}``)."""
    problem = {"type": type, "title": _TITLES[status], "status": status, "detail": detail}
    if extensions:
        problem.update(extensions)
    return json.dumps(problem, separators=(",", ":")).encode()


def problem_response(
    status: int,
    detail: str,
    *,
    type: str = "about:blank",  # the member's name in RFC 9457
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    """An ``application/problem+json`` answer (:func:`problem_body`) with ``headers``."""
    return Response(
        problem_body(status, detail, type, extensions),
        status,
        headers=headers,
        media_type="application/problem+json",
    )


def retry_after_seconds(seconds: float) -> int:
    """``Retry-After`` in whole seconds (RFC 9110 ``delay-seconds``), rounded up, at least 1:
    a 0 would invite the client straight back."""
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


def service_unavailable(detail: str, retry_after: int) -> Response:
    """503 problem+json, ``Retry-After: retry_after``, never stored by a cache."""
    return problem_response(
        503,
        detail,
        type=REDUCED_CAPACITY,
        headers={"retry-after": str(retry_after), "cache-control": "no-store"},
    )
