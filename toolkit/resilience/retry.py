"""RetryPolicy: tenacity's retry loop behind a first attempt that costs nothing.

The first attempt is a plain ``await``: a call that succeeds never builds tenacity's
machinery (about 20 µs per call). Only a failure the policy's ``on=`` accepts enters
``tenacity.AsyncRetrying`` for the remaining attempts, with exponential backoff plus jitter,
``Retry-After`` honoured, the retry budget asked before each retry, and the deadline: a retry
whose wait would pass it is not made. Cancellation is never retried, nor an error that an
inner retry loop already ended (retries at one layer only), nor a breaker's refusal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from opentelemetry import trace
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from toolkit._duration import parse_seconds
from toolkit.errors import ConfigurationError
from toolkit.resilience._nesting import already_retried, mark_retried
from toolkit.resilience._telemetry import RetryTelemetry
from toolkit.resilience.budget import RetryBudget
from toolkit.resilience.classify import (
    ErrorPredicate,
    client_retries_of,
    error_type,
    retry_after_of,
)
from toolkit.telemetry import names

R = TypeVar("R")

logger = logging.getLogger("toolkit.resilience")
_CLIENTS: Final = {"openai": "openai.AsyncOpenAI", "anthropic": "anthropic.AsyncAnthropic"}


class _wait_retry_after(wait_base):
    """The base wait, or the server's Retry-After when longer (capped at ``limit``)."""

    def __init__(self, base: wait_base, limit: float) -> None:
        self.base = base
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.base(retry_state)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if error is not None:
            asked = retry_after_of(error)
            if asked is not None:
                wait = max(wait, min(asked, self.limit))
        return wait


class _stop_by_budget_or_deadline(stop_base):
    """Stop when the deadline would pass during the wait, or the budget has no retry left
    (a refusal: counted and put on the span)."""

    def __init__(self, state: _Run) -> None:
        self.run = state

    def __call__(self, retry_state: RetryCallState) -> bool:
        run = self.run
        remaining = run.remaining()
        if remaining is not None and retry_state.upcoming_sleep >= remaining:
            return True
        if run.budget is None:
            return False
        if run.budget.try_retry():
            run.granted = True
            return False
        run.refused(retry_state)
        return True


class _Run:
    """One call's retry state: never shared between calls."""

    __slots__ = ("budget", "granted", "label", "remaining", "telemetry")

    def __init__(
        self,
        budget: RetryBudget | None,
        remaining: Callable[[], float | None],
        label: str,
        telemetry: RetryTelemetry | None,
    ) -> None:
        self.budget = budget
        self.granted = False
        self.remaining = remaining
        self.label = label
        self.telemetry = telemetry

    def _telemetry(self) -> RetryTelemetry:
        if self.telemetry is None:  # a RetryPolicy run on its own: the global meter provider
            self.telemetry = RetryTelemetry(self.label)
        return self.telemetry

    def retried(self) -> None:
        """A retry is being made: count it."""
        self._telemetry().retried()

    def refused(self, state: RetryCallState) -> None:
        """The budget refused the next attempt: count it, say so on the span."""
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        self._telemetry().budget_exhausted(state.attempt_number + 1, error)

    def refund(self) -> None:
        """Give back a retry granted but never attempted (cancelled during its backoff)."""
        if self.granted and self.budget is not None:
            self.granted = False
            self.budget.refund()


def _no_deadline() -> float | None:
    return None


class RetryPolicy:
    """How to retry: which errors (required), how many attempts, how long to wait.

    Args:
        on: which exceptions to retry: a predicate (``toolkit.resilience.provider_errors``,
            combinable with ``|`` and ``&``), an exception class or a tuple of them. Required:
            only you know what is safe to repeat.
        attempts: attempts in all, the first included (3: two retries).
        wait_initial: seconds before the first retry; doubled each time (0.5, 1, 2, ...)...
        wait_max: ...up to this.
        wait_jitter: up to this many random seconds added to each wait, so callers that
            failed together do not retry together (the first retry waits 0.5 to 1.5 s).
        max_retry_after: the longest ``Retry-After`` honoured; a longer one waits this long
            (and the deadline still applies).
        sleep: how to wait (tests pass a fake); ``asyncio.sleep`` by default.
    """

    def __init__(
        self,
        *,
        on: ErrorPredicate | type[BaseException] | tuple[type[BaseException], ...],
        attempts: int = 3,
        wait_initial: float | str = 0.5,
        wait_max: float | str = 30.0,
        wait_jitter: float | str = 1.0,
        max_retry_after: float | str = 60.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if isinstance(on, type | tuple):
            types = on if isinstance(on, tuple) else (on,)
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
                raise ConfigurationError(
                    f"RetryPolicy(on={on!r}): exception classes or a predicate, e.g. "
                    "on=toolkit.resilience.provider_errors"
                )
            self.on: Callable[[BaseException], bool] = lambda e: (
                isinstance(e, Exception) and (isinstance(e, types))
            )
        elif callable(on):
            self.on = on
        else:
            raise ConfigurationError(
                f"RetryPolicy(on={on!r}): exception classes or a predicate, e.g. "
                "on=toolkit.resilience.provider_errors"
            )
        if not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError(f"RetryPolicy(attempts={attempts!r}): 1 or more, e.g. 3")
        self.attempts = attempts
        try:
            self.wait_initial = parse_seconds(wait_initial)
            self.wait_max = parse_seconds(wait_max)
            self.wait_jitter = parse_seconds(wait_jitter)
            self.max_retry_after = parse_seconds(max_retry_after)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"RetryPolicy: {exc}; waits are seconds or '500ms'") from exc
        self.sleep = sleep
        self._client_checked = False

    def __repr__(self) -> str:
        return f"RetryPolicy(on={self.on!r}, attempts={self.attempts})"

    async def run(
        self,
        function: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        budget: RetryBudget | None = None,
        remaining: Callable[[], float | None] = _no_deadline,
        label: str = "",
        telemetry: RetryTelemetry | None = None,
    ) -> R:
        """``await function(*args, **kwargs)``, retried under this policy.

        Args:
            budget: asked before each retry; this call counts in it.
            remaining: seconds left before the caller's deadline, None for none.
            label: the function's name on span events and metrics.
            telemetry: where retries and refusals are counted; the global meter provider
                when None.
        """
        if budget is not None:
            budget.record_call()
        try:
            return await function(*args, **kwargs)
        except Exception as exc:
            if self.attempts == 1 or not self._retryable(exc):
                raise
            first = exc
        if not self._client_checked:
            self._check_client(first, label)
        run = _Run(budget, remaining, label, telemetry)
        return await self._retry(function, args, kwargs, first, run)

    def _retryable(self, exc: BaseException) -> bool:
        return self.on(exc) and not already_retried(exc)

    def _check_client(self, error: BaseException, label: str) -> None:
        """Once, on the first SDK error about to be retried: warn if the SDK client had
        already retried it (``max_retries``), which multiplies the attempts."""
        found = client_retries_of(error)
        if found is None:
            return
        self._client_checked = True
        package, retries = found
        if retries > 0:
            logger.warning(
                "%s: the %s client had already retried this request %d times on its own (its "
                "max_retries setting) before this RetryPolicy retried it, so each of its %d "
                "attempts makes up to %d requests. Create the client with max_retries=0 "
                "(%s(max_retries=0), or client.with_options(max_retries=0)) so that "
                "@resilient's retries, budget and breaker decide alone.",
                label or "a RetryPolicy",
                package,
                retries,
                self.attempts,
                retries + 1,
                _CLIENTS.get(package, f"{package}.<Client>"),
            )

    async def _retry(
        self,
        function: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        first: Exception,
        run: _Run,
    ) -> R:
        first_attempt = True
        label = run.label

        async def attempt() -> R:
            nonlocal first_attempt
            if first_attempt:
                # Attempt 1 already ran (outside tenacity): hand its error to the loop.
                first_attempt = False
                raise first
            run.granted = False  # the retry granted is being made: it stays spent
            run.retried()
            return await function(*args, **kwargs)

        def before_sleep(state: RetryCallState) -> None:
            span = trace.get_current_span()
            error = state.outcome.exception() if state.outcome is not None else None
            if span.is_recording() and error is not None:
                span.add_event(
                    names.RETRY_ATTEMPT_EVENT,
                    {
                        names.RESILIENCE_FUNCTION: label,
                        names.RETRY_ATTEMPT_NUMBER: state.attempt_number + 1,
                        names.RETRY_WAIT: state.upcoming_sleep,
                        names.ERROR_TYPE: error_type(error),
                    },
                )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | _stop_by_budget_or_deadline(run),
            wait=_wait_retry_after(
                wait_exponential(multiplier=self.wait_initial, max=self.wait_max)
                + wait_random(0, self.wait_jitter),
                self.max_retry_after,
            ),
            retry=retry_if_exception(self._retryable),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except Exception as exc:
            mark_retried(exc)  # enclosing retry loops leave it alone
            raise
        finally:
            run.refund()  # a retry granted, then cancelled during its backoff
