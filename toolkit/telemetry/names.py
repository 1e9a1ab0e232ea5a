"""Every metric, span, span event and attribute name the toolkit emits: the single source.

Code, docs and dashboards take names from here. Standard names come from the OpenTelemetry
semantic conventions (stable first); ``toolkit.*`` covers only what they do not. Each metric
is a name and, next to it, its record (:class:`~toolkit.telemetry.metric.Metric`): kind,
unit, description, buckets, and the attributes it may carry: low-cardinality values only
(route templates, configured policy names, fixed result words), never raw paths, user ids,
keys or prompts, which go on spans only.

Prometheus sees these names translated: dots become underscores, the unit is appended
(``_seconds``) and counters end in ``_total``; e.g. ``toolkit.rate_limit.requests`` is scraped as
``toolkit_rate_limit_requests_total``.

Over 400 lines on purpose: the whole contract, every name with its meaning, reads in one file;
the GenAI names are declared in ``_gen_ai_names.py`` and are this module's too (see below).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from opentelemetry.metrics import Meter
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    exception_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.semconv.metrics import http_metrics

from toolkit.telemetry import metric as _metric
from toolkit.telemetry.metric import (
    COUNTER,
    HISTOGRAM,
    OBSERVABLE_COUNTER,
    OBSERVABLE_GAUGE,
    OBSERVABLE_UP_DOWN_COUNTER,
    Metric,
)

INSTRUMENTATION_SCOPE: Final = "agent-server-toolkit"
"""Name of the tracer and meter the toolkit creates its spans and instruments with."""

# --- Attributes: OpenTelemetry semantic conventions -------------------------------------------
HTTP_REQUEST_METHOD: Final = http_attributes.HTTP_REQUEST_METHOD
"""Request method, normalised: one of the known methods or ``_OTHER``."""
HTTP_REQUEST_METHOD_ORIGINAL: Final = http_attributes.HTTP_REQUEST_METHOD_ORIGINAL
"""The method as sent, on spans only, when it was normalised to ``_OTHER``."""
HTTP_ROUTE: Final = http_attributes.HTTP_ROUTE
"""Route template, e.g. ``/chat/{session_id}``; never the raw path."""
HTTP_RESPONSE_STATUS_CODE: Final = http_attributes.HTTP_RESPONSE_STATUS_CODE
URL_SCHEME: Final = url_attributes.URL_SCHEME
URL_PATH: Final = url_attributes.URL_PATH
"""Raw request path: spans only."""
NETWORK_PROTOCOL_VERSION: Final = network_attributes.NETWORK_PROTOCOL_VERSION
CLIENT_ADDRESS: Final = client_attributes.CLIENT_ADDRESS
"""The peer address: spans only."""
USER_AGENT_ORIGINAL: Final = user_agent_attributes.USER_AGENT_ORIGINAL
"""User-Agent header: spans only."""
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
"""Exception class name, status code or a short toolkit word such as ``timeout``."""
EXCEPTION_TYPE: Final = exception_attributes.EXCEPTION_TYPE
EXCEPTION_MESSAGE: Final = exception_attributes.EXCEPTION_MESSAGE

# --- Attributes: toolkit ----------------------------------------------------------------------
RATE_LIMIT_POLICY: Final = "toolkit.rate_limit.policy"
"""Name of the policy that decided: ``default``, a configured route pattern, or a shared name."""
RATE_LIMIT_RESULT: Final = "toolkit.rate_limit.result"
"""One of :data:`RATE_LIMIT_RESULTS`."""
RATE_LIMIT_KEY: Final = "toolkit.rate_limit.key"
"""Hash of the caller's key (never the key itself): spans only."""
RATE_LIMIT_LIMIT: Final = "toolkit.rate_limit.limit"
"""The limit that bound the decision, e.g. ``60 per 1 minute``: span events only."""
RATE_LIMIT_REMAINING: Final = "toolkit.rate_limit.remaining"
"""Units left in that limit after this request: span events only."""
RATE_LIMIT_RESET: Final = "toolkit.rate_limit.reset"
"""Seconds until that limit is whole again (or, when rejected, until a retry can pass)."""
HOOK: Final = "toolkit.hook"
"""On an exception event: which user-supplied hook raised, e.g. ``ratelimit.caller``."""
BACKEND_NAME: Final = "toolkit.backend.name"
"""``memory`` or ``redis``."""
BACKEND_OPERATION: Final = "toolkit.backend.operation"
"""The backend operation, e.g. ``ratelimit.gcra``."""

CIRCUIT_BREAKER_NAME: Final = "toolkit.circuit_breaker.name"
"""Which breaker: its configured name (one per provider or model, e.g. ``openai``)."""
CIRCUIT_BREAKER_OUTCOME: Final = "toolkit.circuit_breaker.outcome"
"""One of :data:`CIRCUIT_BREAKER_OUTCOMES`."""
CIRCUIT_BREAKER_FROM_STATE: Final = "toolkit.circuit_breaker.from_state"
"""The state a transition left: ``closed``, ``open`` or ``half_open`` (span events only)."""
CIRCUIT_BREAKER_TO_STATE: Final = "toolkit.circuit_breaker.to_state"
"""The state a transition entered: ``closed``, ``open`` or ``half_open``."""
CIRCUIT_BREAKER_FORCED: Final = "toolkit.circuit_breaker.forced"
"""An operator's override in force after a transition: ``open``, ``closed``, ``disabled``,
or empty (span events only)."""
RETRY_ATTEMPT_NUMBER: Final = "toolkit.retry.attempt.number"
"""The attempt about to start after a backoff: 2 for the first retry (span events only)."""
RETRY_WAIT: Final = "toolkit.retry.wait"
"""Seconds slept before that attempt, Retry-After included (span events only)."""
RESILIENCE_FUNCTION: Final = "toolkit.resilience.function"
"""Qualified name of the ``@resilient`` function (or the label given to a ``RetryPolicy``):
on span events, and on the retry and fallback metrics (names come from code, not
requests)."""
RESILIENCE_FALLBACK_REASON: Final = "toolkit.resilience.fallback.reason"
"""Why a ``@resilient`` call's fallback answered: one of :data:`RESILIENCE_FALLBACK_REASONS`."""

CIRCUIT_SUCCESS: Final = "success"
CIRCUIT_FAILURE: Final = "failure"
CIRCUIT_IGNORED: Final = "ignored"
"""Neither failure nor success: cancelled (client disconnect, an outer timeout), or an error
the breaker does not count (a 4xx that is the caller's fault)."""
CIRCUIT_REJECTED: Final = "rejected"
"""Refused without running: open, forced open, or half-open with every probe taken."""
CIRCUIT_SHADOW_REJECTED: Final = "shadow_rejected"
"""Would have been refused, and ran: a breaker in shadow mode (as the rate limiter's)."""
CIRCUIT_BREAKER_OUTCOMES: Final = (
    CIRCUIT_SUCCESS,
    CIRCUIT_FAILURE,
    CIRCUIT_IGNORED,
    CIRCUIT_REJECTED,
    CIRCUIT_SHADOW_REJECTED,
)
CIRCUIT_OPEN: Final = "circuit_open"
"""``error.type`` on the current span of a call a breaker refused."""
CIRCUIT_STATE_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}
FALLBACK_CIRCUIT_OPEN: Final = "circuit_open"
"""The breaker refused the call."""
FALLBACK_DEADLINE: Final = "deadline"
"""The deadline of the current work (a request's, a branch's) cut the call."""
FALLBACK_TIMEOUT: Final = "timeout"
"""The call's own ``timeout=`` passed, or its last attempt timed out."""
FALLBACK_ERROR: Final = "error"
"""The call failed (after its retries, if any) with any other error."""
RESILIENCE_FALLBACK_REASONS: Final = (
    FALLBACK_CIRCUIT_OPEN,
    FALLBACK_DEADLINE,
    FALLBACK_TIMEOUT,
    FALLBACK_ERROR,
)
"""Value of the ``toolkit.circuit_breaker.state`` gauge for each state."""

FEATURE_FLAG_KEY: Final = "feature_flag.key"
"""The flag evaluated (semantic conventions); on metrics, declared keys only."""
FEATURE_FLAG_RESULT_VARIANT: Final = "feature_flag.result.variant"
FEATURE_FLAG_RESULT_REASON: Final = "feature_flag.result.reason"
"""``default``, ``static``, ``split``, ``stale`` or ``error`` (semantic-convention values)."""
FEATURE_FLAG_PROVIDER_NAME: Final = "feature_flag.provider.name"
FLAG_PROVIDER: Final = INSTRUMENTATION_SCOPE
"""Value of ``feature_flag.provider.name`` for the toolkit's own flag store."""

CACHE_NAME: Final = "toolkit.cache.name"
"""Which cache: ``response``, ``embeddings``, or a function cache's namespace."""
CACHE_RESULT: Final = "toolkit.cache.result"
"""One of :data:`CACHE_RESULTS`."""
CACHE_OPERATION: Final = "toolkit.cache.operation"
"""``get``, ``set``, ``invalidate``."""
CACHE_BACKEND: Final = "toolkit.cache.backend"
"""Where the entries live: ``memory``, ``redis``, or ``local`` (the in-process tier)."""
CACHE_KEY: Final = "toolkit.cache.key"
"""Hash of the entry's key: span events only."""

POOL_NAME: Final = "toolkit.pool.name"
"""Which :class:`~toolkit.AgentPool`: its ``name=`` (the factory's name by default). The
semantic conventions' ``db.client.connection.pool.name`` plays this part for database pools."""
POOL_STATE: Final = "toolkit.pool.state"
"""``idle`` (built, waiting in the pool) or ``used`` (lent to a caller), as in
``db.client.connection.state``."""
POOL_DISCARD_REASON: Final = "toolkit.pool.discard.reason"
"""Why an object was closed: one of :data:`POOL_DISCARD_REASONS`."""
POOL_TIMEOUT_PHASE: Final = "toolkit.pool.timeout.phase"
"""Where an acquire timed out: one of :data:`POOL_TIMEOUT_PHASES`."""

POOL_IDLE: Final = "idle"
POOL_USED: Final = "used"
POOL_STATES: Final = (POOL_IDLE, POOL_USED)
POOL_DISCARD_ERROR: Final = "error"
"""The caller's block raised (exclusive mode by default; see ``discard_on``)."""
POOL_DISCARD_CANCELLED: Final = "cancelled"
"""The caller was cancelled while using or checking it: its state is unknown."""
POOL_DISCARD_RECYCLED: Final = "recycled"
"""Past its age (``recycle_after``) or use (``max_uses``) limit."""
POOL_DISCARD_UNHEALTHY: Final = "unhealthy"
"""Its health check returned False, raised or timed out at checkout."""
POOL_DISCARD_RESET_FAILED: Final = "reset_failed"
"""Its ``reset`` hook raised on return."""
POOL_DISCARD_CLOSED: Final = "closed"
"""The pool closed (shutdown), or it was built per call with the ``pool`` flag off."""
POOL_DISCARD_EVICTED: Final = "evicted"
"""Its key was idle and evicted to make room for a new key (``max_keys``)."""
POOL_DISCARD_REASONS: Final = (
    POOL_DISCARD_ERROR,
    POOL_DISCARD_CANCELLED,
    POOL_DISCARD_RECYCLED,
    POOL_DISCARD_UNHEALTHY,
    POOL_DISCARD_RESET_FAILED,
    POOL_DISCARD_CLOSED,
    POOL_DISCARD_EVICTED,
)
POOL_QUEUE_FULL: Final = "queue_full"
"""``error.type`` of an acquire refused because ``max_waiting`` callers already wait."""
POOL_TIMEOUT: Final = "timeout"
"""``error.type`` of an acquire that passed its ``acquire_timeout``."""
POOL_PHASE_ACQUIRE: Final = "acquire"
"""The acquire's own wait ran out: no object (free, checked or built) within
``acquire_timeout``, or the current deadline when sooner."""
POOL_PHASE_BUILD: Final = "build"
"""The build the acquire waited for passed the pool's ``create_timeout`` (its factory call
was cancelled): a slow factory, not a pool too small."""
POOL_TIMEOUT_PHASES: Final = (POOL_PHASE_ACQUIRE, POOL_PHASE_BUILD)
POOL_TOO_MANY_KEYS: Final = "too_many_keys"
"""``error.type`` of an acquire for a new key refused because ``max_keys`` keys are busy."""

CACHE_HIT: Final = "hit"
CACHE_MISS: Final = "miss"
CACHE_STALE: Final = "stale"
"""Served past its time to live, within stale-while-revalidate, while one caller refreshes."""
CACHE_BYPASS: Final = "bypass"
"""Not cacheable (request or response), or the flag is off: straight to the origin."""
CACHE_ERROR: Final = "error"
"""The backend failed: served by the origin."""
CACHE_REFUSED: Final = "refused"
"""Answered 400 by the response cache, not by the origin: a GET or HEAD with content on a
route that does not key on the body."""
CACHE_WAIT_TIMEOUT: Final = "wait_timeout"
"""Computed by this caller after waiting ``cache.wait`` for another caller's computation of
the same key, which stored nothing in that time."""
CACHE_WAIT_DEADLINE: Final = "wait_deadline"
"""The current deadline (a request's, ``toolkit.deadline``) cut this caller's wait for another
caller's computation of the same key, sooner than ``cache.wait``: it raised
``DeadlineExceeded`` without computing (the leader still stores the result)."""
CACHE_RESULTS: Final = (
    CACHE_HIT,
    CACHE_MISS,
    CACHE_STALE,
    CACHE_BYPASS,
    CACHE_ERROR,
    CACHE_REFUSED,
    CACHE_WAIT_TIMEOUT,
    CACHE_WAIT_DEADLINE,
)

RATE_LIMIT_ALLOWED: Final = "allowed"
RATE_LIMIT_REJECTED: Final = "rejected"
RATE_LIMIT_ERROR: Final = "error"
"""The backend failed; the policy's failure mode decided."""
RATE_LIMIT_SHADOW_REJECTED: Final = "shadow_rejected"
"""Would have been rejected, let through because the policy is in shadow mode."""
RATE_LIMIT_RESULTS: Final = (
    RATE_LIMIT_ALLOWED,
    RATE_LIMIT_REJECTED,
    RATE_LIMIT_ERROR,
    RATE_LIMIT_SHADOW_REJECTED,
)

UNMATCHED_ROUTE: Final = "__unmatched__"
"""``http.route`` metric label of requests no route matched (404s), so raw paths never leak."""

# --- Attributes: several workers behind one /metrics ------------------------------------------
PROCESS_PID: Final = "process.pid"
"""The worker process of a gauge that describes one process (``process_start_time_seconds``,
an application's own gauges), added when ``/metrics`` merges several workers (semantic
conventions' process attribute; see docs/telemetry.md, "Several workers")."""

# --- Spans and span events --------------------------------------------------------------------
HTTP_SERVER_SPAN: Final = "{method} {route}"
"""SERVER span per request, named ``GET /chat/{id}``; just the method when no route matched."""
RATE_LIMIT_DECISION_EVENT: Final = "toolkit.rate_limit.decision"
"""Span event per limited request: policy, result, limit, remaining, reset."""
BACKEND_ERROR_EVENT: Final = "toolkit.backend.error"
"""Span event when a backend call fails: operation, error.type, exception.*."""
CACHE_LOOKUP_EVENT: Final = "toolkit.cache.lookup"
"""Span event per cache decision: cache name, result, hashed key."""
CIRCUIT_BREAKER_STATE_CHANGE_EVENT: Final = "toolkit.circuit_breaker.state_change"
"""Span event when this instance sees a breaker change state (its own decision or one
announced by another instance): name, from and to state, forced."""
RETRY_ATTEMPT_EVENT: Final = "toolkit.retry.attempt"
"""Span event before each retry of a ``@resilient`` call: function, attempt number, wait,
``error.type`` of the failure being retried."""
RESILIENCE_FALLBACK_EVENT: Final = "toolkit.resilience.fallback"
"""Span event when a ``@resilient`` call answered from its fallback: function, ``error.type``
(``circuit_open``, ``timeout`` or the failure's class)."""
RESILIENCE_STREAM_INTERRUPTED_EVENT: Final = "toolkit.resilience.stream.interrupted"
"""Span event when a ``@resilient`` stream failed after its first chunk, so that it was neither
retried nor answered by its fallback: function, the chunks the consumer had, ``error.type``."""
RETRY_BUDGET_EXHAUSTED_EVENT: Final = "toolkit.retry.budget_exhausted"
"""Span event when the retry budget refused a retry the policy would have made: function,
the attempt number refused, ``error.type`` of the failure that is raised instead."""
POOL_WAIT_SPAN: Final = "toolkit.pool.wait"
"""INTERNAL span of an acquire that waited at least the pool's ``wait_threshold``, from the
start of the acquire to the moment it got an object or gave up (timed afterwards: quick
acquires cost no span)."""
POOL_EXHAUSTED_EVENT: Final = "toolkit.pool.exhausted"
"""Span event when an acquire is refused: pool name, ``error.type`` (``queue_full``,
``too_many_keys`` or ``timeout``; a timeout also its ``toolkit.pool.timeout.phase``)."""
FEATURE_FLAG_EVALUATION_EVENT: Final = "feature_flag.evaluation"
"""Span event per flag evaluation (semantic conventions): key, variant, reason, provider.
Kill switches at their default add none: only an override is news on a span."""

from toolkit.telemetry._pipeline_names import DEFERRED_SPAN_EVENTS  # noqa: E402

SPAN_EVENTS: Final = (
    RATE_LIMIT_DECISION_EVENT,
    CACHE_LOOKUP_EVENT,
    BACKEND_ERROR_EVENT,
    FEATURE_FLAG_EVALUATION_EVENT,
    CIRCUIT_BREAKER_STATE_CHANGE_EVENT,
    RETRY_ATTEMPT_EVENT,
    RESILIENCE_FALLBACK_EVENT,
    RESILIENCE_STREAM_INTERRUPTED_EVENT,
    RETRY_BUDGET_EXHAUSTED_EVENT,
    POOL_EXHAUSTED_EVENT,
    *DEFERRED_SPAN_EVENTS,
)
"""Every span event the toolkit adds."""

# --- Metrics ----------------------------------------------------------------------------------
# One block per metric: its name, which code and docs use, and its record, which is all there
# is to say about it: kind, unit, description, the only attributes it may carry, buckets. The
# record creates the instrument (``BACKEND_ERRORS_METRIC.create(meter)``; an observable one
# once per meter through ``toolkit.telemetry.counts``), and the dashboards and the registry
# test read everything else from it.
HTTP_DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    320.0,
)
"""Seconds. The semantic-convention buckets stop at 10 s; agent requests run for minutes."""

CACHE_DURATION_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Seconds: backend round trips, from a local dict to a slow Redis."""

POOL_WAIT_BUCKETS: Final = (
    0.00001,
    0.0001,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Seconds: from an idle object handed over in microseconds to a long wait for room."""

HTTP_SERVER_REQUEST_DURATION: Final = http_metrics.HTTP_SERVER_REQUEST_DURATION
"""Time from request start to the last response byte."""
HTTP_SERVER_REQUEST_DURATION_METRIC: Final = Metric(
    HTTP_SERVER_REQUEST_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of HTTP server requests.",
    attributes=(
        HTTP_REQUEST_METHOD,
        URL_SCHEME,
        HTTP_ROUTE,
        HTTP_RESPONSE_STATUS_CODE,
        NETWORK_PROTOCOL_VERSION,
        ERROR_TYPE,
    ),
    buckets=HTTP_DURATION_BUCKETS,
)

HTTP_SERVER_ACTIVE_REQUESTS: Final = "http.server.active_requests"
"""Requests in flight."""
HTTP_SERVER_ACTIVE_REQUESTS_METRIC: Final = Metric(
    HTTP_SERVER_ACTIVE_REQUESTS,
    OBSERVABLE_UP_DOWN_COUNTER,
    unit="{request}",
    description="Number of active HTTP server requests.",
    attributes=(HTTP_REQUEST_METHOD, URL_SCHEME),
)

RATE_LIMIT_REQUESTS: Final = "toolkit.rate_limit.requests"
"""Rate-limit decisions by policy and result."""
RATE_LIMIT_REQUESTS_METRIC: Final = Metric(
    RATE_LIMIT_REQUESTS,
    OBSERVABLE_COUNTER,
    unit="{request}",
    description="Rate-limit decisions, by policy and result.",
    attributes=(RATE_LIMIT_POLICY, RATE_LIMIT_RESULT),
)

BACKEND_ERRORS: Final = "toolkit.backend.errors"
"""Backend calls that failed, timed out or were skipped while it was down."""
BACKEND_ERRORS_METRIC: Final = Metric(
    BACKEND_ERRORS,
    COUNTER,
    unit="{error}",
    description="Backend calls that failed, timed out or were skipped while it was down.",
    attributes=(BACKEND_NAME, BACKEND_OPERATION, ERROR_TYPE),
)

CACHE_REQUESTS: Final = "toolkit.cache.requests"
"""Cache decisions by cache name and result."""
CACHE_REQUESTS_METRIC: Final = Metric(
    CACHE_REQUESTS,
    OBSERVABLE_COUNTER,
    unit="{request}",
    description="Cache decisions, by cache and result.",
    attributes=(CACHE_NAME, CACHE_RESULT),
)

CACHE_OPERATION_DURATION: Final = "toolkit.cache.operation.duration"
"""Cache backend operations by operation and backend."""
CACHE_OPERATION_DURATION_METRIC: Final = Metric(
    CACHE_OPERATION_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of cache backend operations.",
    attributes=(CACHE_OPERATION, CACHE_BACKEND),
    buckets=CACHE_DURATION_BUCKETS,
)

CACHE_ENTRIES: Final = "toolkit.cache.entries"
"""Entries held: the in-process stores' own counts, Redis's keys (INFO)."""
CACHE_ENTRIES_METRIC: Final = Metric(
    CACHE_ENTRIES,
    OBSERVABLE_GAUGE,
    unit="{entry}",
    description="Cache entries held, where the backend can tell.",
    attributes=(CACHE_BACKEND,),
)

CACHE_EVICTIONS: Final = "toolkit.cache.evictions"
"""Entries evicted to make room (on Redis, its ``evicted_keys``)."""
CACHE_EVICTIONS_METRIC: Final = Metric(
    CACHE_EVICTIONS,
    OBSERVABLE_COUNTER,
    unit="{entry}",
    description="Cache entries evicted to make room, where the backend can tell.",
    attributes=(CACHE_BACKEND,),
)

FEATURE_FLAG_EVALUATIONS: Final = "toolkit.feature_flag.evaluations"
"""Flag evaluations by key, variant and reason."""
FEATURE_FLAG_EVALUATIONS_METRIC: Final = Metric(
    FEATURE_FLAG_EVALUATIONS,
    OBSERVABLE_COUNTER,
    unit="{evaluation}",
    description="Feature flag evaluations, by flag, variant and reason.",
    attributes=(FEATURE_FLAG_KEY, FEATURE_FLAG_RESULT_VARIANT, FEATURE_FLAG_RESULT_REASON),
)

FEATURE_FLAG_CHANGES: Final = "toolkit.feature_flag.changes"
"""Flag changes this process applied, by key."""
FEATURE_FLAG_CHANGES_METRIC: Final = Metric(
    FEATURE_FLAG_CHANGES,
    OBSERVABLE_COUNTER,
    unit="{change}",
    description="Feature flag changes applied by this process, by flag.",
    attributes=(FEATURE_FLAG_KEY,),
)

# Agent pools. The names follow OpenTelemetry's ``db.client.connection.*`` conventions (count
# by state, pending_requests, wait_time, use_time, create_time, timeouts) under ``toolkit.pool``:
# the objects are agents, clients and sandboxes rather than database connections, and a
# dashboard of the service's real database pools must not count them.
POOL_COUNT: Final = "toolkit.pool.objects"
"""Objects by pool and state (idle, used); like ``db.client.connection.count``, renamed
because Prometheus reads a name ending in ``_count`` as part of a histogram."""
POOL_COUNT_METRIC: Final = Metric(
    POOL_COUNT,
    OBSERVABLE_UP_DOWN_COUNTER,
    unit="{object}",
    description="Pooled objects, by pool and state (idle or used).",
    attributes=(POOL_NAME, POOL_STATE),
)

POOL_PENDING_REQUESTS: Final = "toolkit.pool.pending_requests"
"""Acquires waiting for room, by pool; like ``db.client.connection.pending_requests``."""
POOL_PENDING_REQUESTS_METRIC: Final = Metric(
    POOL_PENDING_REQUESTS,
    OBSERVABLE_UP_DOWN_COUNTER,
    unit="{request}",
    description="Acquires waiting for room in a pool.",
    attributes=(POOL_NAME,),
)

POOL_WAIT_TIME: Final = "toolkit.pool.wait_time"
"""How long each acquire took (wait, checks and build), by pool; like
``db.client.connection.wait_time``."""
POOL_WAIT_TIME_METRIC: Final = Metric(
    POOL_WAIT_TIME,
    HISTOGRAM,
    unit="s",
    description="Time an acquire took to get an object from a pool.",
    attributes=(POOL_NAME,),
    buckets=POOL_WAIT_BUCKETS,
)

POOL_USE_TIME: Final = "toolkit.pool.use_time"
"""How long callers held an object, by pool; like ``db.client.connection.use_time``."""
POOL_USE_TIME_METRIC: Final = Metric(
    POOL_USE_TIME,
    HISTOGRAM,
    unit="s",
    description="Time between acquiring a pooled object and giving it back.",
    attributes=(POOL_NAME,),
    buckets=HTTP_DURATION_BUCKETS,
)

POOL_CREATE_TIME: Final = "toolkit.pool.create_time"
"""How long the factory took to build one object, by pool; like
``db.client.connection.create_time``."""
POOL_CREATE_TIME_METRIC: Final = Metric(
    POOL_CREATE_TIME,
    HISTOGRAM,
    unit="s",
    description="Time the factory took to build a pooled object.",
    attributes=(POOL_NAME,),
    buckets=POOL_WAIT_BUCKETS,
)

POOL_TIMEOUTS: Final = "toolkit.pool.timeouts"
"""Acquires that timed out, by pool and phase (:data:`POOL_TIMEOUT_PHASES`: past
``acquire_timeout``, or the build they waited for past ``create_timeout``); like
``db.client.connection.timeouts``."""
POOL_TIMEOUTS_METRIC: Final = Metric(
    POOL_TIMEOUTS,
    OBSERVABLE_COUNTER,
    unit="{timeout}",
    description="Acquires that timed out: past the pool's acquire timeout (phase acquire), "
    "or their build past its create timeout (phase build).",
    attributes=(POOL_NAME, POOL_TIMEOUT_PHASE),
)

POOL_REJECTIONS: Final = "toolkit.pool.rejections"
"""Acquires refused at once, by pool: the wait queue was full, or a new key came past
``max_keys`` with every key busy (no semantic-convention equivalent: database pools do not
bound their queue)."""
POOL_REJECTIONS_METRIC: Final = Metric(
    POOL_REJECTIONS,
    OBSERVABLE_COUNTER,
    unit="{request}",
    description="Acquires refused at once: the wait queue was full, or no room for a new key.",
    attributes=(POOL_NAME,),
)

POOL_DISCARDS: Final = "toolkit.pool.discards"
"""Objects closed, by pool and reason (:data:`POOL_DISCARD_REASONS`)."""
POOL_DISCARDS_METRIC: Final = Metric(
    POOL_DISCARDS,
    OBSERVABLE_COUNTER,
    unit="{object}",
    description="Pooled objects closed, by pool and reason.",
    attributes=(POOL_NAME, POOL_DISCARD_REASON),
)

CIRCUIT_BREAKER_STATE: Final = "toolkit.circuit_breaker.state"
"""Each breaker's state as this instance sees it, by name: 0 closed, 1 half-open, 2 open
(:data:`CIRCUIT_STATE_VALUES`)."""
CIRCUIT_BREAKER_STATE_METRIC: Final = Metric(
    CIRCUIT_BREAKER_STATE,
    OBSERVABLE_GAUGE,
    unit="1",
    description="Circuit breaker state by breaker: 0 closed, 1 half-open, 2 open.",
    attributes=(CIRCUIT_BREAKER_NAME,),
)

CIRCUIT_BREAKER_TRANSITIONS: Final = "toolkit.circuit_breaker.transitions"
"""State changes this instance applied, by name and new state."""
CIRCUIT_BREAKER_TRANSITIONS_METRIC: Final = Metric(
    CIRCUIT_BREAKER_TRANSITIONS,
    OBSERVABLE_COUNTER,
    unit="{transition}",
    description="Circuit breaker state changes applied by this instance, by new state.",
    attributes=(CIRCUIT_BREAKER_NAME, CIRCUIT_BREAKER_TO_STATE),
)

CIRCUIT_BREAKER_CALLS: Final = "toolkit.circuit_breaker.calls"
"""Calls through each breaker, by name and outcome."""
CIRCUIT_BREAKER_CALLS_METRIC: Final = Metric(
    CIRCUIT_BREAKER_CALLS,
    OBSERVABLE_COUNTER,
    unit="{call}",
    description="Calls through circuit breakers, by breaker and outcome.",
    attributes=(CIRCUIT_BREAKER_NAME, CIRCUIT_BREAKER_OUTCOME),
)

RETRY_BUDGET_EXHAUSTED: Final = "toolkit.retry.budget_exhausted"
"""Retries the retry budget refused (the call failed with attempts left), by function."""
RETRY_BUDGET_EXHAUSTED_METRIC: Final = Metric(
    RETRY_BUDGET_EXHAUSTED,
    OBSERVABLE_COUNTER,
    unit="{retry}",
    description="Retries refused by the retry budget, by function.",
    attributes=(RESILIENCE_FUNCTION,),
)

RETRY_ATTEMPTS: Final = "toolkit.retry.attempts"
"""Retries made (attempts after the first), by function: a ``@resilient`` call's or a
stream's before its first chunk, or a ``RetryPolicy``'s label."""
RETRY_ATTEMPTS_METRIC: Final = Metric(
    RETRY_ATTEMPTS,
    OBSERVABLE_COUNTER,
    unit="{retry}",
    description="Retries made (attempts after the first), by function.",
    attributes=(RESILIENCE_FUNCTION,),
)

RESILIENCE_FALLBACKS: Final = "toolkit.resilience.fallbacks"
"""Calls a ``@resilient`` function's fallback answered, by function and reason
(:data:`RESILIENCE_FALLBACK_REASONS`), with a breaker or without."""
RESILIENCE_FALLBACKS_METRIC: Final = Metric(
    RESILIENCE_FALLBACKS,
    OBSERVABLE_COUNTER,
    unit="{call}",
    description="Calls answered by a @resilient function's fallback, by function and reason.",
    attributes=(RESILIENCE_FUNCTION, RESILIENCE_FALLBACK_REASON),
)

# --- Event loop health (toolkit.telemetry.loop) -----------------------------------------------
# Declared in ``_event_loop_names.py``, as the GenAI names below; every name is this module's.
from toolkit.telemetry._event_loop_names import *  # noqa: E402, F403

# --- GenAI: agents, steps, LLM and embedding calls -------------------------------------------
# Declared in ``_gen_ai_names.py`` (which also says which version of the GenAI conventions the
# toolkit follows, and why), so that this file stays readable in one go; every name is this
# module's: ``names.GEN_AI_REQUEST_MODEL``, ``names.AGENT_DURATION_METRIC``.
from toolkit.telemetry._gen_ai_names import *  # noqa: E402, F403

# Declared in ``_pipeline_names.py``: fan-out, deadlines, deferred work, offloaded calls.
from toolkit.telemetry._pipeline_names import *  # noqa: E402, F403

METRIC_RECORDS: Final[Mapping[str, Metric[Any]]] = MappingProxyType(
    {metric.name: metric for metric in list(globals().values()) if isinstance(metric, Metric)}
)
"""Every metric the toolkit emits, by name: the records above, collected here so that
declaring one is the only edit."""
METRICS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {name: metric.attributes for name, metric in METRIC_RECORDS.items()}
)
"""Every metric the toolkit emits, with the only attributes it may carry."""


# --- Deprecated -------------------------------------------------------------------------------
# Before the records, each metric had a factory (``create_rate_limit_requests(meter, callback)``)
# and an attribute tuple (``RATE_LIMIT_REQUESTS_ATTRIBUTES``): both still answer, with a warning.
def _factory(record: Metric[Any]) -> Callable[..., Any]:
    def create(meter: Meter, callback: _metric.Callback | None = None) -> Any:
        return record.create(meter, () if callback is None else [callback])

    return create


_WITH_FACTORIES: Final = (
    HTTP_SERVER_REQUEST_DURATION_METRIC,
    HTTP_SERVER_ACTIVE_REQUESTS_METRIC,
    RATE_LIMIT_REQUESTS_METRIC,
    BACKEND_ERRORS_METRIC,
    FEATURE_FLAG_EVALUATIONS_METRIC,
    FEATURE_FLAG_CHANGES_METRIC,
    CACHE_REQUESTS_METRIC,
    CACHE_OPERATION_DURATION_METRIC,
    CACHE_ENTRIES_METRIC,
    CACHE_EVICTIONS_METRIC,
    POOL_COUNT_METRIC,
    POOL_PENDING_REQUESTS_METRIC,
    POOL_WAIT_TIME_METRIC,
    POOL_USE_TIME_METRIC,
    POOL_CREATE_TIME_METRIC,
    POOL_TIMEOUTS_METRIC,
    POOL_REJECTIONS_METRIC,
    POOL_DISCARDS_METRIC,
    CIRCUIT_BREAKER_STATE_METRIC,
    CIRCUIT_BREAKER_TRANSITIONS_METRIC,
    CIRCUIT_BREAKER_CALLS_METRIC,
    RETRY_BUDGET_EXHAUSTED_METRIC,
)
"""The metrics that had a factory before the records; later ones never had one."""


def _renamed() -> dict[str, tuple[str, object]]:
    """Each old name -> what replaced it, and its value."""
    renamed: dict[str, tuple[str, object]] = {
        "Callback": ("toolkit.telemetry.metric.Callback", _metric.Callback),
        "POOL_NAME_ATTRIBUTES": ("names.POOL_WAIT_TIME_METRIC.attributes", (POOL_NAME,)),
    }
    for constant, record in globals().items():
        if isinstance(record, Metric) and record in _WITH_FACTORIES:
            name = constant.removesuffix("_METRIC")
            how = "(meter, callbacks)" if record.kind.observed else "(meter)"
            renamed[f"create_{name.lower()}"] = (f"names.{constant}.create{how}", _factory(record))
            renamed[f"{name}_ATTRIBUTES"] = (f"names.{constant}.attributes", record.attributes)
    return renamed


_RENAMED: Final = _renamed()


def __getattr__(name: str) -> object:
    if name not in _RENAMED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    replacement, value = _RENAMED[name]
    warnings.warn(
        f"toolkit.telemetry.names.{name} is deprecated: use {replacement}",
        DeprecationWarning,
        stacklevel=2,
    )
    return value


# --- Model calls: the server they went to (toolkit-openai) -----------------------------------
SERVER_ADDRESS: Final = server_attributes.SERVER_ADDRESS
"""The host a model call was sent to (``api.openai.com``), on its span: spans only."""
SERVER_PORT: Final = server_attributes.SERVER_PORT
"""The port a model call was sent to (443), on its span: spans only."""
