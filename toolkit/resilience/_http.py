"""The HTTP answer to a refused call: 503, problem details (RFC 9457), and ``Retry-After``
the time the breaker stays open.

``install()`` registers it for :class:`~toolkit.errors.CircuitOpenError`, unless the app has
a handler of its own: a route that calls a ``@resilient`` function without a fallback
answers an open breaker as the pool answers a full queue, not with a 500 and a traceback."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from toolkit._problem import retry_after_seconds, service_unavailable
from toolkit.errors import CircuitOpenError


async def circuit_open(request: Request, exc: Exception) -> Response:
    """503 for a CircuitOpenError (registered by ``install()`` as an exception handler)."""
    del request
    seconds = exc.retry_after if isinstance(exc, CircuitOpenError) else 0.0
    retry_after = retry_after_seconds(seconds)
    return service_unavailable(f"{exc}; retry in {retry_after} s.", retry_after)
