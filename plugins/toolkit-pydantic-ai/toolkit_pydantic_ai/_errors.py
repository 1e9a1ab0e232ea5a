"""Which failed model requests are worth another attempt."""

from __future__ import annotations

from typing import Final

from pydantic_ai.exceptions import (
    ModelConnectionError,
    ModelRateLimitError,
    ModelServerError,
    ModelUnavailableError,
)

from toolkit.resilience import ErrorPredicate, provider_errors, retry_if_exception_type

model_errors: Final[ErrorPredicate] = (
    retry_if_exception_type(
        ModelConnectionError, ModelRateLimitError, ModelServerError, ModelUnavailableError
    )
    | provider_errors
)
"""Transient failures of a model request: pydantic-ai's connection, timeout, rate-limit,
unavailable and server errors, and the toolkit's ``provider_errors`` (a 408, 429 or 5xx
status, timeouts and connection errors of the SDK below). Never a rejected request (4xx),
a quota, or an answer that failed validation: those fail again the same way."""
