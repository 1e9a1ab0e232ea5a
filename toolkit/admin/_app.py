"""The admin app under its mount: authenticates every request, then routes it; every answer
is no-store, every refusal a problem answer."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Mount, Route, Router
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from toolkit.admin._auth import Tokens
from toolkit.admin._cache import cache_routes
from toolkit.admin._flags import flag_routes
from toolkit.admin._http import Problem
from toolkit.admin._page import page_route
from toolkit.admin._status import status_routes
from toolkit.cache import CacheStore, current_cache
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagStore
from toolkit.settings import AdminSettings
from toolkit.telemetry.status import StatusBoard

_ALWAYS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
_READS = frozenset({"GET", "HEAD"})
"""What a read-only token may send; anything else may change something."""


def admin_routes(
    store: FlagStore,
    settings: AdminSettings,
    *,
    cache: CacheStore | None = None,
    status: StatusBoard | None = None,
) -> Mount:
    """The admin API and pages over ``store``, ``cache`` (the current cache at each purge
    when None) and ``status`` (the status page and ``/stats``; not served when None), to
    mount on the app's router.

    Raises:
        ConfigurationError: no token is configured, or ``path`` is ``/`` (the admin routes
            would answer, and demand a token, for every path of the app).
    """
    if not settings.any_token:
        raise ConfigurationError(
            "admin routes need a token in admin.tokens (or admin.read_tokens), such as "
            'TOOLKIT_ADMIN__TOKENS=\'{"ops": "<32 random characters>"}\''
        )
    if settings.path.rstrip("/") == "":
        raise ConfigurationError(
            f"TOOLKIT_ADMIN__PATH={settings.path!r} would cover the whole app; use a prefix "
            "such as '/_toolkit'"
        )
    routes = [
        page_route(),
        *flag_routes(store),
        *cache_routes(current_cache if cache is None else lambda: cache),
        *(status_routes(status) if status is not None else []),
    ]
    tokens = Tokens(settings.tokens, settings.read_tokens)
    return Mount(settings.path, app=_Admin(routes, tokens), name="toolkit-admin")


def admin_paths(settings: AdminSettings) -> list[str]:
    """The paths the admin routes answer, as path patterns (none when no token mounts them):
    ``install()`` keeps them out of telemetry and the status page's figures, as ``/metrics``,
    so that ``agent-toolkit top`` polling ``/stats`` is not counted as the app's traffic."""
    if not settings.any_token:
        return []
    path = settings.path.rstrip("/")
    return [path, f"{path}/*"]


class _Admin:
    """The ASGI app under the mount: authenticates, refuses a read-only token anything but
    reads, then routes; every answer is no-store."""

    def __init__(self, routes: list[Route], tokens: Tokens) -> None:
        self._tokens = tokens
        self._router = Router(routes=list(routes), default=self._not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await WebSocketClose()(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(_ALWAYS)
            await send(message)

        request = Request(scope)
        try:
            admin = self._tokens.identify(request.headers.get("authorization"))
            if not admin.writes and scope["method"] not in _READS:
                raise Problem(403, f"token {admin.name!r} is read-only: it changes nothing")
            request.state.admin_name = admin.name
            await self._router(scope, receive, send_no_store)
        except ClientDisconnect:  # the client left while sending its body: no one to answer
            return
        except Problem as problem:
            await problem.response()(scope, receive, send_no_store)
        except HTTPException as exc:  # the router's 405, raised before any response
            await Problem(exc.status_code, exc.detail, headers=exc.headers).response()(
                scope, receive, send_no_store
            )

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise Problem(404, f"no admin route {scope['path']!r}")
