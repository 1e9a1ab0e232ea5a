"""Per-request flag context: one snapshot for the whole request, and test overrides."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from toolkit.flags._store import FlagStore

_UNSET: Any = object()
logger = logging.getLogger("toolkit.flags")


class RequestFlags:
    """The store and the snapshot a request started with; its caller, found when needed."""

    __slots__ = ("_caller", "scope", "snapshot", "store")

    def __init__(self, store: FlagStore, scope: Scope) -> None:
        self.store = store
        self.snapshot = store._snapshot
        self.scope = scope
        self._caller: str | None = _UNSET

    def caller(self) -> str | None:
        if self._caller is _UNSET:
            self._caller = self.store.caller_of(self.scope)
        return self._caller


REQUEST: contextvars.ContextVar[RequestFlags | None] = contextvars.ContextVar(
    "toolkit_flags_request", default=None
)
OVERRIDES: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "toolkit_flags_overrides", default=None
)


@contextlib.contextmanager
def override(values: Mapping[str, str | bool]) -> Iterator[None]:
    """Serve these variants in the current context (a test, or a request inside it), above
    every other source. ``True`` and ``False`` stand for ``on`` and ``off``.

        with toolkit.flags.override({"ratelimit": "off", "agent.prompt-v2": True}):
            ...
    """
    current = OVERRIDES.get() or {}
    named = {k: ("on" if v else "off") if isinstance(v, bool) else v for k, v in values.items()}
    token = OVERRIDES.set({**current, **named})
    try:
        yield
    finally:
        OVERRIDES.reset(token)


class FlagContextMiddleware:
    """Pins the flag snapshot for each request, outermost in the stack, so that a request
    sees one value of every flag from start to end, even if a flag flips meanwhile."""

    def __init__(self, app: ASGIApp, *, store: FlagStore) -> None:
        self.app = app
        self.store = store
        self._checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self._checked:
            self._checked = True
            self._warn_if_never_started()
        token = REQUEST.set(RequestFlags(self.store, scope))
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
