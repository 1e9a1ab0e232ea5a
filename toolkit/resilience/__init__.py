"""Resilience: circuit breakers (state shared through the backend), retries (tenacity) with a
retry budget, deadlines and fallbacks, composed by ``@toolkit.resilient``."""

from toolkit._default import DEFAULT
from toolkit.resilience._naming import model_breaker_name
from toolkit.resilience.breaker import CircuitBreaker, Probe
from toolkit.resilience.budget import RetryBudget
from toolkit.resilience.classify import (
    ErrorPredicate,
    counts_as_failure,
    error_type,
    is_caller_error,
    provider_errors,
    retry_after_of,
    retry_if_connection_error,
    retry_if_exception_type,
    retry_if_rate_limited,
    retry_if_server_error,
    retry_if_status,
    retry_if_timeout,
    status_of,
)
from toolkit.resilience.decorator import resilient
from toolkit.resilience.registry import BreakerRegistry, current_breakers, set_current_breakers
from toolkit.resilience.retry import RetryPolicy

__all__ = [
    "DEFAULT",
    "BreakerRegistry",
    "CircuitBreaker",
    "ErrorPredicate",
    "Probe",
    "RetryBudget",
    "RetryPolicy",
    "counts_as_failure",
    "current_breakers",
    "error_type",
    "is_caller_error",
    "model_breaker_name",
    "provider_errors",
    "resilient",
    "retry_after_of",
    "retry_if_connection_error",
    "retry_if_exception_type",
    "retry_if_rate_limited",
    "retry_if_server_error",
    "retry_if_status",
    "retry_if_timeout",
    "set_current_breakers",
    "status_of",
]
