"""Exceptions raised by the toolkit.

    ToolkitError
     +-- ConfigurationError    a setting or argument is invalid; raised at startup only
          +-- UnknownFlag          no flag of that key is declared
     +-- BackendError          a storage call failed or timed out (driver error in __cause__)
          +-- BackendUnavailable   the backend is down; skipped until its next reconnect
     +-- CircuitOpenError      a circuit breaker refused the call (open, or half-open and full)
     +-- DeadlineExceeded      the work's deadline passed (also a TimeoutError); a request's: 504
     +-- DeferRefused          deferred work was not accepted: the queue stayed full, or stopped
          +-- DurableUnavailable   durable mode: Redis did not take the task in time
     +-- DurableArgumentError  a durable task's argument is not JSON (also a TypeError)
     +-- NoRequestError        a per-caller cache was used where no request is being served
     +-- PoolError             an AgentPool (or the offload pool) cannot serve now (install(): 503)
          +-- PoolExhaustedError   its wait queue is full: refused at once, without waiting
          +-- PoolTimeoutError     none came free within acquire_timeout, or a build passed
                                   create_timeout
          +-- PoolClosedError      the pool was closed (the app is shutting down)

Backend errors never reach the application: the capability that made the call catches them,
counts them and takes its failure path (fail-open unless configured otherwise).
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class of every exception the toolkit raises."""


class ConfigurationError(ToolkitError):
    """A setting or argument is invalid. The message names it, its value and a valid example."""


class UnknownFlag(ConfigurationError):
    """No flag of that key is declared (as opposed to a bad variant or percentage): raised by
    the flag store when asked for an undeclared flag (a write; the admin routes answer 404).
    Also ``toolkit.flags.UnknownFlag``."""


class BackendError(ToolkitError):
    """A backend call failed or exceeded its timeout.

    Args:
        operation: the backend operation that failed, e.g. ``"ratelimit.gcra"``.
        error_type: a short, low-cardinality name of the failure, used as ``error.type``.
    """

    def __init__(self, message: str, *, operation: str, error_type: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.error_type = error_type


class BackendUnavailable(BackendError):
    """The backend failed recently and is skipped until its next reconnect attempt."""


class NoRequestError(ToolkitError):
    """``@cached(per_caller=True)`` was called outside a request (a startup hook, a worker,
    a test without an app): there is no caller whose entries it could use."""


class PoolError(ToolkitError):
    """An :class:`~toolkit.AgentPool` cannot lend an object now, or the offload pool of
    ``@toolkit.offload`` has no room (``pool="offload"``). ``install()`` answers it with a 503
    problem+json and ``Retry-After``.

    Args:
        pool: the pool's name (``toolkit.pool.name``).
        retry_after: seconds after which a retry may find room.
    """

    def __init__(self, message: str, *, pool: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.pool = pool
        self.retry_after = retry_after


class PoolExhaustedError(PoolError):
    """Every object is lent and ``max_waiting`` callers already wait: refused at once."""


class PoolTimeoutError(PoolError):
    """No object came free (or was built) within the pool's ``acquire_timeout``, or the
    build the caller waited for passed ``create_timeout``.

    Args:
        setting: which of the pool's settings ran out: ``acquire_timeout`` or
            ``create_timeout``.
    """

    def __init__(
        self, message: str, *, pool: str, retry_after: int = 1, setting: str = "acquire_timeout"
    ) -> None:
        super().__init__(message, pool=pool, retry_after=retry_after)
        self.setting = setting


class PoolClosedError(PoolError):
    """The pool was closed (the app is shutting down) and lends nothing more."""


class CircuitOpenError(ToolkitError):
    """A circuit breaker refused the call without running it: the breaker is open, forced
    open, or half-open with every probe permit taken. Catch it to answer without the
    dependency, or pass ``fallback=`` to :func:`~toolkit.resilient`.

    Args:
        breaker: the breaker's name.
        retry_after: seconds until the breaker lets a probe through (0 when unknown).
    """

    def __init__(self, message: str, *, breaker: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.retry_after = retry_after


class DeadlineExceeded(ToolkitError, TimeoutError):
    """The deadline of the current work (a request's time budget, a fan-out's, or the caller's
    ``toolkit.deadline(...)``) has passed. It is a :class:`TimeoutError`, so code that handles
    timeouts handles it; ``install()`` answers one that escapes a route with a 504 problem+json.
    """


class DeferRefused(ToolkitError):
    """A deferred task was not accepted (``toolkit.defer``, ``fn.defer``): the queue stayed
    full for the whole hand-off timeout (or what was left of the deadline, if sooner), or the
    runner has stopped (the app is shutting down). Nothing of the task ran; ``install()``
    answers one that escapes a route with a 503 problem+json.

    Args:
        task: the task's registered name.
        error_type: ``queue_full`` or ``stopped``, as on the span event and the metric.
    """

    retry_after = 1
    """Seconds a client is told to wait (``Retry-After`` of the 503)."""

    def __init__(self, message: str, *, task: str, error_type: str) -> None:
        super().__init__(message)
        self.task = task
        self.error_type = error_type


class DurableUnavailable(DeferRefused):
    """Durable mode (``defer.durable``): Redis did not take a deferred task within the
    hand-off timeout (or the deadline), so the task was not accepted and will not run (the
    driver's error in ``__cause__``; ``error_type`` is ``unavailable``). Raised by the
    hand-off unless ``defer.durable.on_unavailable`` is ``"in_process"``; ``install()``
    answers it 503 as every ``DeferRefused``."""


class DurableArgumentError(ToolkitError, TypeError):
    """Durable mode: a deferred task's argument does not come back from JSON unchanged (an
    object, bytes, a tuple, a non-str key), or the task is over
    ``defer.durable.max_payload_bytes``. The message names the argument; pass plain data or an
    id to load it by. Durable tasks are never pickled."""
