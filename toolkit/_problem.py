"""The toolkit's own HTTP error answers: problem details (RFC 9457) with ``Retry-After``.

``install()`` registers exception handlers that answer with these, so a route that does no
more than call a pool or a ``@resilient`` function answers a refusal fast, as a 503 in the
same shape as the rate limiter's answers, never as a 500 with a traceback."""

from __future__ import annotations

import json
import math
from typing import Final

from starlette.responses import Response

REDUCED_CAPACITY: Final = (
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
)


def retry_after_seconds(seconds: float) -> int:
    """``Retry-After`` in whole seconds (RFC 9110 ``delay-seconds``), rounded up, at least 1:
    a 0 would invite the client straight back."""
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


def service_unavailable(detail: str, retry_after: int) -> Response:
    """503 problem+json, ``Retry-After: retry_after``, never stored by a cache."""
    problem = {
        "type": REDUCED_CAPACITY,
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
    }
    return Response(
        json.dumps(problem, separators=(",", ":")),
        status_code=503,
        media_type="application/problem+json",
        headers={"retry-after": str(retry_after), "cache-control": "no-store"},
    )
