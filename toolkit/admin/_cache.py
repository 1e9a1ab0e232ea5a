"""The cache route: purge every cache (responses, functions, embeddings) by tag, on every
instance; the only way in that a client's own headers never open."""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from toolkit.admin._http import Problem, invalid, json_body, json_response
from toolkit.cache import CacheStore
from toolkit.errors import BackendError

logger = logging.getLogger("toolkit.admin")


def cache_routes(cache: Callable[[], CacheStore]) -> list[Route]:
    """``POST /cache/invalidate`` over the store ``cache()`` returns at each purge."""

    async def invalidate_cache(request: Request) -> Response:
        tags = (await json_body(request, {"tags"}))["tags"]
        if (
            not isinstance(tags, list)
            or not tags
            or not all(isinstance(tag, str) and tag for tag in tags)
        ):
            raise invalid("tags", "must be a non-empty list of non-empty strings")
        try:
            deleted = await cache().invalidate(tags)
        except BackendError as exc:
            raise Problem(
                503,
                f"the cache backend failed ({exc}); some entries may remain. Try again.",
                error_type=exc.error_type,
            ) from exc
        logger.info("cache tags %s invalidated by %s", tags, request.state.admin_name)
        return json_response({"tags": tags, "deleted": deleted})

    return [Route("/cache/invalidate", invalidate_cache, methods=["POST"])]
