"""Which errors are worth another attempt: small predicates that combine with ``|``, ``&``, ``~``.

Whether an error is retryable is the caller's call (``RetryPolicy(on=...)`` has no default);
:data:`provider_errors` is the sensible choice for LLM and HTTP providers: timeouts,
connection errors, 408, 429 (its ``Retry-After`` honoured by the wait) and 5xx, and never
another 4xx or a validation error, which would fail again the same way.

Errors are read by shape, not imported types, so httpx, openai, anthropic and most SDKs work
without a plugin: a ``status_code`` attribute, or a ``response`` with one, gives the status;
``response.headers`` (or ``headers``) gives ``Retry-After`` / ``retry-after-ms``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Final

# Class names (anywhere in the MRO) of the timeout and connection errors of httpx, httpcore,
# aiohttp, openai and anthropic: matching by name keeps those libraries optional.
_TIMEOUT_NAMES: Final = frozenset(
    {"TimeoutException", "APITimeoutError", "ServerTimeoutError", "ReadTimeout", "ConnectTimeout"}
)
_CONNECTION_NAMES: Final = frozenset(
    {
        "TransportError",
        "NetworkError",
        "ConnectError",
        "RemoteProtocolError",
        "APIConnectionError",
        "ClientConnectionError",
        "ServerDisconnectedError",
    }
)
_VALIDATION_NAMES: Final = frozenset({"ValidationError"})
_RETRYABLE_CLIENT_STATUSES: Final = frozenset({408, 429})
# The openai and anthropic SDKs send this on every request: how many times the client had
# retried it (0 on the first try).
_CLIENT_RETRY_COUNT: Final = "x-stainless-retry-count"


def _mro_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an error carries (``status_code``, or ``response.status_code``)."""
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def retry_after_of(exc: BaseException, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked the caller to wait (``retry-after-ms``, or ``Retry-After`` in
    seconds or as an HTTP date), or None."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        headers = getattr(exc, "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)  # RFC 9110: delay-seconds or HTTP-date
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def client_retries_of(exc: BaseException) -> tuple[str, int] | None:
    """``(package, retries)`` when ``exc`` comes from an SDK client that retries on its own
    and says how often: the openai and anthropic clients send ``x-stainless-retry-count`` on
    every request, and their errors carry the request. None for any other error."""
    try:
        request = getattr(exc, "request", None)
        if request is None:
            request = getattr(getattr(exc, "response", None), "request", None)
        value = None if request is None else request.headers.get(_CLIENT_RETRY_COUNT)
        retries = None if value is None else int(value)
    except Exception:  # httpx raises RuntimeError for a response without its request
        return None
    if retries is None:
        return None
    return type(exc).__module__.partition(".")[0], retries


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or bool(_mro_names(exc) & _TIMEOUT_NAMES)


def is_connection_error(exc: BaseException) -> bool:
    if is_timeout(exc):
        return False
    return isinstance(exc, ConnectionError) or bool(_mro_names(exc) & _CONNECTION_NAMES)


def is_client_error(exc: BaseException) -> bool:
    """The caller's fault, the same on every attempt: a 4xx other than 408 and 429, or a
    validation error (pydantic's, or ValueError/TypeError raised before any request)."""
    status = status_of(exc)
    if status is not None:
        return 400 <= status < 500 and status not in _RETRYABLE_CLIENT_STATUSES
    return isinstance(exc, ValueError | TypeError) or bool(_mro_names(exc) & _VALIDATION_NAMES)


def error_type(exc: BaseException) -> str:
    """A short, low-cardinality ``error.type``: ``timeout``, ``connection``, the status code,
    or the exception's class name."""
    if is_timeout(exc):
        return "timeout"
    if is_connection_error(exc):
        return "connection"
    status = status_of(exc)
    return str(status) if status is not None else type(exc).__qualname__


class ErrorPredicate:
    """Whether an exception qualifies; combine with ``|`` (either), ``&`` (both), ``~`` (not).

    Cancellation (``asyncio.CancelledError``) and other ``BaseException``s never qualify.
    """

    __slots__ = ("_test", "name")

    def __init__(self, test: Callable[[Exception], bool], name: str) -> None:
        self._test = test
        self.name = name

    def __call__(self, exc: BaseException) -> bool:
        return isinstance(exc, Exception) and self._test(exc)

    def __or__(self, other: ErrorPredicate) -> ErrorPredicate:
        return ErrorPredicate(lambda e: self(e) or other(e), f"({self.name} | {other.name})")

    def __and__(self, other: ErrorPredicate) -> ErrorPredicate:
        return ErrorPredicate(lambda e: self(e) and other(e), f"({self.name} & {other.name})")

    def __invert__(self) -> ErrorPredicate:
        return ErrorPredicate(lambda e: not self(e), f"~{self.name}")

    def __repr__(self) -> str:
        return self.name


def retry_if_exception_type(*types: type[BaseException]) -> ErrorPredicate:
    """Errors of these classes (or subclasses)."""
    return ErrorPredicate(
        lambda e: isinstance(e, types),
        f"retry_if_exception_type({', '.join(t.__name__ for t in types)})",
    )


def retry_if_status(*statuses: int) -> ErrorPredicate:
    """Errors carrying one of these HTTP statuses."""
    wanted = frozenset(statuses)
    return ErrorPredicate(
        lambda e: status_of(e) in wanted, f"retry_if_status({', '.join(map(str, statuses))})"
    )


retry_if_timeout: Final = ErrorPredicate(is_timeout, "retry_if_timeout")
"""Timeouts: TimeoutError, httpx.TimeoutException, openai.APITimeoutError, ..."""
retry_if_connection_error: Final = ErrorPredicate(is_connection_error, "retry_if_connection_error")
"""The request may not have arrived: connection refused or reset, DNS, protocol errors."""
retry_if_rate_limited: Final = ErrorPredicate(
    lambda e: status_of(e) == 429, "retry_if_rate_limited"
)
"""HTTP 429; the wait honours its Retry-After."""
retry_if_server_error: Final = ErrorPredicate(
    lambda e: (status_of(e) or 0) >= 500, "retry_if_server_error"
)
"""HTTP 5xx (overloaded, bad gateway, ...)."""
is_caller_error: Final = ErrorPredicate(is_client_error, "is_caller_error")
"""4xx other than 408/429, and validation errors: the caller's fault, not the provider's."""

provider_errors: Final = (
    retry_if_timeout
    | retry_if_connection_error
    | retry_if_rate_limited
    | retry_if_server_error
    | retry_if_status(408)
)
"""Transient errors of LLM and HTTP providers: timeouts, connection errors, 408, 429, 5xx."""

counts_as_failure: Final = ~is_caller_error
"""The breaker's default: every error except the caller's own (a 400 says nothing about the
provider's health)."""
