"""The HTTP answer to a pool that cannot lend: 503, problem details (RFC 9457), Retry-After.

``install()`` registers it for :class:`~toolkit.errors.PoolError`, so a route that does no
more than ``async with pool.acquire()`` answers a full queue or a timeout fast and in the
same shape as the rate limiter's 429s."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from toolkit._problem import service_unavailable
from toolkit.errors import PoolError


async def pool_unavailable(request: Request, exc: Exception) -> Response:
    """503 for a PoolError (registered by ``install()`` as an exception handler)."""
    del request
    retry_after = exc.retry_after if isinstance(exc, PoolError) else 1
    return service_unavailable(f"{exc}; retry in {retry_after} s.", retry_after)
