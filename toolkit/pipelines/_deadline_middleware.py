"""``DeadlineMiddleware``: each request's time budget, from its route, the default or its
header, set as the current deadline (``toolkit._deadlines``) for everything the request runs.

When the budget runs out before the response started, the app is cancelled and the request
answered 504 problem+json; a ``DeadlineExceeded`` escaping the app before the response
started is answered the same way. Once the response started (a stream), the middleware never
cuts it: the deadline still bounds every toolkit wait inside, and the app ends it its way.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

from opentelemetry import metrics, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit import _deadlines
from toolkit._paths import PathMatcher, route_path
from toolkit._problem import problem_body
from toolkit._version import __version__
from toolkit.errors import DeadlineExceeded
from toolkit.flags import PIPELINES_DEADLINE, FlagSource, current_flags
from toolkit.settings import DeadlineSettings
from toolkit.telemetry import names

# Seconds as a client writes them: digits, an optional fraction; nothing a float() would also
# take (inf, nan, 1e9, underscores, non-ASCII digits).
_SECONDS: Final = re.compile(rb"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_NOT_A_NUMBER: Final = "not_a_number"
_NOT_POSITIVE: Final = "not_positive"
_NONE: Final = "none"


class DeadlineMiddleware:
    """Gives each request a time budget, inside the telemetry middleware (``install()``
    places it there), so its 504s are on the server span and in the HTTP metrics.

    Args:
        app: the ASGI app.
        settings: the ``deadline`` section (default budget, per-route budgets, the header
            and its maximum); its defaults when None: no budget unless the request's
            ``Request-Timeout`` header asks for one (at most 60 s).
        flags: where the ``pipelines.deadline`` flag is read, at each request; the current
            flags when None. Off: no budget and no 504, the request runs as without it.
        meter_provider: where ``toolkit.deadline.exceeded`` is counted; the global one when
            None.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: DeadlineSettings | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.app = app
        self.settings = settings = settings or DeadlineSettings.model_validate({})
        self._flags = flags
        self._routes = PathMatcher(settings.routes) if settings.routes else None
        self._budgets = {pattern: route.budget for pattern, route in settings.routes.items()}
        self._header = None if settings.header is None else settings.header.encode("latin-1")
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._exceeded = names.DEADLINE_EXCEEDED_METRIC.create(meter)
        self._attributes = {
            source: {names.DEADLINE_SOURCE: source} for source in names.DEADLINE_SOURCES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not (self._flags or current_flags()).is_enabled(PIPELINES_DEADLINE):
            await self.app(scope, receive, send)
            return
        budget, source, ignored = self._budget(scope)
        if budget is not None or ignored is not None:  # else nothing to tell the span
            span = trace.get_current_span()
            if span.is_recording():
                if budget is not None:
                    span.set_attribute(names.DEADLINE_BUDGET, budget)
                    span.set_attribute(names.DEADLINE_SOURCE, source)
                if ignored is not None:
                    span.set_attribute(names.DEADLINE_HEADER_IGNORED, ignored)
        started = False
        timer: asyncio.Timeout | None = None

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timer is not None:
                    timer.reschedule(None)  # a response under way is never cut here
            await send(message)

        try:
            if budget is None:  # no budget of its own: only a DeadlineExceeded to answer
                await self.app(scope, receive, send_started)
            else:
                with _deadlines.deadline(budget):
                    async with asyncio.timeout(budget) as timer:
                        await self.app(scope, receive, send_started)
        except TimeoutError as exc:
            ours = isinstance(exc, DeadlineExceeded) or (timer is not None and timer.expired())
            if started or not ours:
                raise
            await self._answer(send, budget, source if budget is not None else _NONE)

    def _budget(self, scope: Scope) -> tuple[float | None, str, str | None]:
        """(budget, where it came from, why the header was ignored or None)."""
        ignored = None
        if self._header is not None:
            for name, value in scope["headers"]:
                if name == self._header:
                    value = value.strip()
                    if not _SECONDS.fullmatch(value):
                        ignored = _NOT_A_NUMBER
                    elif (seconds := float(value)) <= 0:
                        ignored = _NOT_POSITIVE
                    else:
                        return min(seconds, self.settings.max), "header", None
                    break
        if self._routes is not None:
            pattern = self._routes.match(route_path(scope))
            if pattern is not None:
                return self._budgets[pattern], "route", ignored
        return self.settings.default, "default", ignored

    async def _answer(self, send: Send, budget: float | None, source: str) -> None:
        self._exceeded.add(1, self._attributes[source])
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(names.DEADLINE_EXPIRED, True)
        if budget is None:
            detail = "the deadline of this request's work passed before its answer"
            body = problem_body(504, detail)
        else:
            detail = f"the request's time budget of {budget:g}s ran out before its answer"
            body = problem_body(504, detail, extensions={"budget": budget})
        await send(
            {
                "type": "http.response.start",
                "status": 504,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
