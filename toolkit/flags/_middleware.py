"""FlagContextMiddleware: the flag snapshot of each request, pinned for its whole life."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from toolkit.flags._store import REQUEST, FlagStore

logger = logging.getLogger("toolkit.flags")


class FlagContextMiddleware:
    """Pins the flag snapshot for each request (:meth:`FlagStore.pin`), outermost in the
    stack, so that a request sees one value of every flag from start to end, even if a flag
    flips meanwhile."""

    def __init__(self, app: ASGIApp, *, store: FlagStore) -> None:
        self.app = app
        self.store = store
        self._pin = store.pin
        self._checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self._checked:
            self._checked = True
            self._warn_if_never_started()
        token = REQUEST.set(self._pin(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST.reset(token)

    def _warn_if_never_started(self) -> None:
        """A request served by a store that was never started (its app's lifespan did not run:
        a parent app does not run the lifespans of the apps it mounts) answers from defaults,
        blind to the fleet's overrides: say so once, with the fix."""
        if self.store.started or self.store.backend.in_process:
            return
        logger.warning(
            "serving requests, but the toolkit of this app was never started (its lifespan "
            "did not run): flag overrides and kill switches are not loaded, cache "
            "invalidations not followed, pools not warmed. A parent app does not run the "
            "lifespan of the apps it mounts: enter it in the parent's lifespan, `async with "
            "api.router.lifespan_context(api): yield` (docs/ratelimit.md, under a mount)"
        )
