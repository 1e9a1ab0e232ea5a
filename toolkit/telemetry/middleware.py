"""HTTP server telemetry: one SERVER span and the HTTP RED metrics per request, pure ASGI."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._paths import PathMatcher, route_path
from toolkit._version import __version__
from toolkit.flags import TRACING, FlagSource, current_flags
from toolkit.telemetry import names
from toolkit.telemetry._route import recorded_routes, route_template
from toolkit.telemetry.batched import batched_records
from toolkit.telemetry.counts import shared_counts

if TYPE_CHECKING:
    from toolkit.telemetry.status import StatusBoard

_KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)


class _HeaderGetter(Getter[list[tuple[bytes, bytes]]]):
    """Reads propagation headers (traceparent, baggage) straight from the ASGI header list."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()
_MAX_STARTS = 64
"""(method, scheme) pairs whose start attributes are kept: the known methods (others are
``_OTHER``) over the schemes a server reports; any past it are built per request."""


class _Start:
    """What a request's method and scheme give its span and metrics, built once per pair."""

    __slots__ = ("active", "attributes", "known", "method", "span_name")

    def __init__(self, method: str, scheme: str) -> None:
        self.known = method in _KNOWN_METHODS
        self.method = method if self.known else "_OTHER"
        self.span_name = method if self.known else "HTTP"
        self.active = (self.method, scheme)
        self.attributes: dict[str, str | int] = {
            names.HTTP_REQUEST_METHOD: self.method,
            names.URL_SCHEME: scheme,
        }


class TelemetryMiddleware:
    """Outermost toolkit middleware but the flag context: a SERVER span ``{method} {route}``
    per request and the stable HTTP metrics ``http.server.request.duration`` (buckets up to
    minutes) and ``http.server.active_requests``.

    Everything inside (rate limiting, caching, the app) runs with this span current, so their
    decisions land on it. Labels are route templates (``__unmatched__`` when none matched),
    never raw paths or the Host header. Response messages pass through untouched, so streaming
    responses stream; the span and the duration end with the last body byte.

    If an instrumentation outside this middleware already traces the request (FastAPI's native
    telemetry, ``FastAPIInstrumentor``), it steps aside rather than open a second server span
    and double-count the HTTP metrics; it still times the request for ``status``.

    Args:
        tracer_provider / meter_provider: the global providers when None.
        flags: asked for ``tracing`` on every request; off means the bare app. The current
            source (``toolkit.flags.current_flags()``) when None.
        excluded_paths: paths or patterns with no span and no metrics.
        status: where each request's route, duration and failure are counted for the status
            page (``install()`` gives its board), sampled or not; nowhere when None.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        flags: FlagSource | None = None,
        excluded_paths: Iterable[str] = (),
        status: StatusBoard | None = None,
    ) -> None:
        self.app = app
        self._status = status
        self._tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._duration = names.HTTP_SERVER_REQUEST_DURATION_METRIC.create(meter)
        self._active = shared_counts(meter, names.HTTP_SERVER_ACTIVE_REQUESTS_METRIC)
        # The durations reach the SDK in batches, and before every collection reads them.
        self._records = batched_records(meter, self._active)
        self._flags = flags
        excluded = PathMatcher(excluded_paths)
        self._excluded = excluded if excluded else None
        self._starts: dict[tuple[str, str], _Start] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not (self._flags or current_flags()).is_enabled(TRACING)
            or (self._excluded is not None and self._excluded.match(route_path(scope)) is not None)
        ):
            await self.app(scope, receive, send)
            return
        # Read once and handed to the SDK, which would read it again at each step otherwise.
        outside = context.get_current()
        if _traced_outside(scope, outside):
            if self._status is None:
                await self.app(scope, receive, send)
            else:
                await self._timed(scope, receive, send, self._status)
            return

        started = time.perf_counter()
        method = scope["method"]
        start = self._start(method, scope.get("scheme", "http"))
        self._active.add(start.active, start.attributes)
        root_path = scope.get("root_path", "")
        outer_routes = recorded_routes(scope)  # a parent app's Mount, when this app is mounted
        parent = _parent_context(scope["headers"])
        if parent is None:  # no trace context sent: the one the request arrived in, as is
            parent = outside
        span = self._tracer.start_span(
            start.span_name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**start.attributes, names.URL_PATH: scope["path"]},
        )
        current = trace.set_span_in_context(span, parent)
        token = context.attach(current)
        status: int | None = None
        # The response is complete at its last body byte; background tasks that run after it
        # must not stretch the duration, but an exception they raise still belongs here.
        completed: tuple[float, int] | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status, completed
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = (time.perf_counter(), time.time_ns())

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_observed)
        except BaseException as exc:
            error = exc
            raise
        finally:
            ended, end_ns = completed or (time.perf_counter(), None)
            route = route_template(scope, root_path, outer_routes)
            attributes = {
                **start.attributes,
                names.HTTP_ROUTE: route or names.UNMATCHED_ROUTE,
                names.NETWORK_PROTOCOL_VERSION: scope.get("http_version", "1.1"),
                # An exception before the response means the server error handler sends a 500.
                names.HTTP_RESPONSE_STATUS_CODE: 500 if status is None else status,
            }
            if error is not None:
                attributes[names.ERROR_TYPE] = type(error).__qualname__
            elif status is None or status >= 500:
                attributes[names.ERROR_TYPE] = str(status or 500)
            # With the request's context: an exemplar names this trace, batched or not.
            self._records.record(self._duration, ended - started, attributes, current)
            self._active.add(start.active, start.attributes, -1)
            if self._status is not None:
                self._status.record_request(
                    start.method,
                    route or names.UNMATCHED_ROUTE,
                    ended - started,
                    names.ERROR_TYPE in attributes,
                )
            if span.is_recording():
                _describe(span, scope, attributes, route, start, method)
                if error is not None:
                    span.record_exception(error)
                if names.ERROR_TYPE in attributes:
                    span.set_status(StatusCode.ERROR)
            span.end(end_time=end_ns)
            context.detach(token)

    def _start(self, method: str, scheme: str) -> _Start:
        start = self._starts.get((method, scheme))
        if start is None:
            start = _Start(method, scheme)
            if len(self._starts) < _MAX_STARTS and start.known:
                self._starts[(method, scheme)] = start
        return start

    async def _timed(self, scope: Scope, receive: Receive, send: Send, status: StatusBoard) -> None:
        """The request traced outside: only its route, duration and failure, for ``status``."""
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        outer_routes = recorded_routes(scope)
        answered: int | None = None
        ended: float | None = None

        async def send_timed(message: Message) -> None:
            nonlocal answered, ended
            if message["type"] == "http.response.start":
                answered = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = time.perf_counter()

        failed = True
        try:
            await self.app(scope, receive, send_timed)
            failed = answered is None or answered >= 500
        finally:
            method = scope["method"]
            route = route_template(scope, root_path, outer_routes) or names.UNMATCHED_ROUTE
            status.record_request(
                method if method in _KNOWN_METHODS else "_OTHER",
                route,
                (ended or time.perf_counter()) - started,
                failed,
            )


_fields: tuple[object, frozenset[bytes]] = (None, frozenset())


def _parent_context(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The caller's trace context, if its headers carry one; most requests carry none, and
    extraction is then skipped. The propagator's header names are read once per propagator."""
    global _fields
    textmap = propagate.get_global_textmap()
    if _fields[0] is not textmap:
        _fields = (textmap, frozenset(f.lower().encode("latin-1") for f in textmap.fields))
    wanted = _fields[1]
    for name, _ in headers:
        if name in wanted:
            return propagate.extract(headers, getter=_GETTER)
    return None


def _traced_outside(scope: Scope, current: Context) -> bool:
    """Whether an instrumentation outside this middleware traces this request already
    (``current``: the context the request arrived in)."""
    if scope.get("fastapi.telemetry"):
        return True
    outer = trace.get_current_span(current).get_span_context()
    return outer.is_valid and not outer.is_remote


def _describe(
    span: trace.Span,
    scope: Scope,
    attributes: dict[str, str | int],
    route: str | None,
    start: _Start,
    method: str,
) -> None:
    """Span-only detail, built only when the span records; one call into the SDK."""
    span.update_name(f"{start.span_name} {route}" if route else start.span_name)
    # Method and scheme were given at start. The metric label __unmatched__ keeps series
    # bounded; a span with no matched route simply has no http.route.
    detail: dict[str, str | int] = {}
    if route is not None:
        detail[names.HTTP_ROUTE] = route
    detail[names.NETWORK_PROTOCOL_VERSION] = attributes[names.NETWORK_PROTOCOL_VERSION]
    detail[names.HTTP_RESPONSE_STATUS_CODE] = attributes[names.HTTP_RESPONSE_STATUS_CODE]
    error = attributes.get(names.ERROR_TYPE)
    if error is not None:
        detail[names.ERROR_TYPE] = error
    if not start.known:
        detail[names.HTTP_REQUEST_METHOD_ORIGINAL] = method
    client = scope.get("client")
    if client:
        detail[names.CLIENT_ADDRESS] = client[0]
    for name, value in scope["headers"]:
        if name == b"user-agent":
            detail[names.USER_AGENT_ORIGINAL] = value.decode("latin-1")
            break
    span.set_attributes(detail)
