"""A ``@resilient`` policy per model of one async client: the breaker named
``{provider}:{model}`` (tuned by ``resilience.breakers."{provider}:{model}"``), the toolkit's
retries and the deadline (``resilience.timeout``).

Where the toolkit retries, each attempt goes through a copy of the client made once with
``max_retries=0``: the SDK would retry every attempt again otherwise (3 toolkit attempts x 3
SDK attempts = 9 requests). Where it does not (``retries=None``, or the ``resilience`` flag
off), the client's own retries stay as the app configured them.

The breakers are named by ``toolkit.resilience.model_breaker_name``, bounded per process (past
its bound, later models share ``{provider}:other``); a client keeps the policies of at most
:data:`MAX_MODELS` models at hand and finds the others' by breaker name on each call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from toolkit import Default
from toolkit.errors import ConfigurationError
from toolkit.flags import RESILIENCE, FlagSource, current_flags
from toolkit.resilience import RetryPolicy, model_breaker_name, provider_errors, resilient

DEFAULT_ATTEMPTS: Final = 3
"""Attempts in all of a request when ``retries=`` is left out."""
MAX_MODELS: Final = 64
"""Models of one client whose policies are kept at hand; the others' are found by breaker
name on each call."""

Method = Callable[..., Awaitable[Any]]
Send = Callable[[Method, dict[str, Any]], Awaitable[Any]]


def retry_policy(retries: int | RetryPolicy | Default | None) -> RetryPolicy | int | None:
    """What ``@resilient(retries=...)`` takes, from what ``instrument(retries=...)`` took."""
    if isinstance(retries, Default):
        return DEFAULT_ATTEMPTS
    if isinstance(retries, bool) or not isinstance(retries, int | RetryPolicy | None):
        raise ConfigurationError(
            f"toolkit_openai.instrument(retries={retries!r}): attempts in all, e.g. 3, or a "
            "toolkit.resilience.RetryPolicy; None for one attempt"
        )
    if isinstance(retries, int) and retries < 1:
        raise ConfigurationError(
            f"toolkit_openai.instrument(retries={retries}): attempts in all, 1 or more, e.g. 3"
        )
    return retries


class Guards:
    """The policies of one client's models, made on each model's first call."""

    def __init__(
        self,
        provider: str,
        *,
        breakers: bool,
        retries: int | RetryPolicy | Default | None,
        timeout: float | str | Default | None,
        flags: FlagSource | None,
    ) -> None:
        self._provider = provider
        self._breakers = breakers
        self._policy = retry_policy(retries)
        policy = self._policy
        attempts = policy.attempts if isinstance(policy, RetryPolicy) else policy or 1
        self.retrying = attempts > 1
        """Whether the toolkit retries (and so the SDK must not)."""
        self.inert = not breakers and not self.retrying and timeout is None
        """Whether there is nothing to guard (no breaker, one attempt, no deadline): each
        call then goes straight to the SDK, without the policy's call path."""
        self._timeout = timeout
        self._flags = flags
        self._by_model: dict[str, Send] = {}
        self._by_name: dict[str, Send] = {}  # bounded by the breaker names there can be
        resilient(retries=self._as_retries(), retry_on=self._retry_on(), timeout=timeout)  # checks

    def _as_retries(self) -> int | RetryPolicy | None:
        policy = self._policy
        return None if policy == 1 else policy

    def _retry_on(self) -> Any:
        return provider_errors if isinstance(self._as_retries(), int) else None

    def on(self) -> bool:
        """Whether the ``resilience`` flag lets the policies act now."""
        return (self._flags or current_flags()).is_enabled(RESILIENCE)

    def get(self, model: str) -> Send:
        """The guarded send of ``model``'s requests: ``await send(method, kwargs)``."""
        guard = self._by_model.get(model)
        if guard is None:
            name = model_breaker_name(self._provider, model)
            guard = self._by_name.get(name)
            if guard is None:
                guard = self._by_name[name] = self._make(name)
            if len(self._by_model) < MAX_MODELS:
                self._by_model[model] = guard
        return guard

    def _make(self, name: str) -> Send:

        async def send(method: Method, kwargs: dict[str, Any]) -> Any:
            return await method(**kwargs)

        send.__qualname__ = send.__name__ = f"toolkit_openai[{name}]"  # the retries' label
        return resilient(
            breaker=name if self._breakers else None,
            retries=self._as_retries(),
            retry_on=self._retry_on(),
            timeout=self._timeout,
            flags=self._flags,
        )(send)
