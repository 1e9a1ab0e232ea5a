"""The HTTP answer to a refused hand-off: 503, problem details (RFC 9457), Retry-After.

``install()`` registers it for :class:`~toolkit.errors.DeferRefused`, so a route whose
deferred work could not be queued answers as a full pool does, not with a bare 500."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from toolkit._problem import service_unavailable
from toolkit.errors import DeferRefused


async def defer_refused(request: Request, exc: Exception) -> Response:
    """503 for a DeferRefused (registered by ``install()`` as an exception handler)."""
    del request
    retry_after = exc.retry_after if isinstance(exc, DeferRefused) else 1
    return service_unavailable(f"{exc}; retry in {retry_after} s.", retry_after)
