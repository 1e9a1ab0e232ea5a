"""Per-request flag context: one snapshot for the whole request, and test overrides."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from toolkit.flags._store import FlagStore

_UNSET: Any = object()


class RequestFlags:
    """The store and the snapshot a request started with; its subject, found when needed."""

    __slots__ = ("_subject", "scope", "snapshot", "store")

    def __init__(self, store: FlagStore, scope: Scope) -> None:
        self.store = store
        self.snapshot = store._snapshot
        self.scope = scope
        self._subject: str | None = _UNSET

    def subject(self) -> str | None:
        if self._subject is _UNSET:
            self._subject = self.store.subject_of(self.scope)
        return self._subject


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = REQUEST.set(RequestFlags(self.store, scope))
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST.reset(token)
