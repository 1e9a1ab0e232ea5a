"""ToolkitModel: the toolkit's capabilities on every request of a pydantic-ai model.

The layers of one request, outermost first:

1. pydantic-ai's ``chat {model}`` span (its instrumentation wraps the model request), so every
   decision below lands on it as an event: the cache lookup, the breaker's refusal, each retry;
   and the toolkit's GenAI metrics of each request sent, recorded onto that span (``_usage``):
   duration, tokens, cost, a stream's time to first chunk.
2. the cache (``cache_ttl=``, opted in): a deterministic request (``temperature`` 0) is served
   from the app's cache store, per caller, before the breaker is asked; see ``_cache``.
3. ``@resilient``: the deadline, the breaker named ``{provider}:{model}`` and the retries, with
   the SDK's own retries switched off (``max_retries`` 0) whenever the toolkit retries, so 3
   attempts are 3 requests and not 9.

A streamed request is guarded while it opens (breaker, retries, deadline); what fails after
its first chunk is the stream's and reaches the caller. Streams are never cached.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import KnownModelName, Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from toolkit import DEFAULT, Default
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagSource
from toolkit.resilience import RetryPolicy, model_breaker_name, resilient
from toolkit_pydantic_ai._cache import RequestCache
from toolkit_pydantic_ai._errors import model_errors
from toolkit_pydantic_ai._usage import answered, model_call

DEFAULT_ATTEMPTS: Final = 3
"""Attempts in all of a model request when ``retries=`` is left out."""

Send = Callable[[list[ModelMessage], ModelSettings | None, ModelRequestParameters], Any]


class ToolkitModel(WrapperModel):
    """A pydantic-ai model whose requests go through the toolkit: a circuit breaker per
    provider and model, retries at the toolkit level only, a deadline, and, where the app
    opts in, a per-caller cache of deterministic requests.

        agent = Agent(ToolkitModel("openai:gpt-4o", cache_ttl="10m"), name="support")

    Args:
        wrapped: the model, or its name (``"openai:gpt-4o"``), as ``Agent(model=...)`` takes.
        breaker: the breaker's name (its ``resilience.breakers.<name>`` settings apply);
            ``{provider}:{model}`` by default; None for none.
        retries: attempts in all (retrying :data:`~toolkit_pydantic_ai.model_errors`), or a
            :class:`~toolkit.resilience.RetryPolicy`; 3 by default; None for one attempt.
            When the toolkit retries, the SDK's own retries are off.
        timeout: deadline of one request, retries and backoff included; the
            ``resilience.timeout`` setting by default; None for none.
        cache_ttl: how long the answer to a deterministic request (``temperature`` 0) is
            served from the app's cache store to the same caller (the ``cache.caller``
            setting), e.g. ``"10m"``; None (the default) caches nothing.
        flags: where the ``resilience`` and ``cache.function`` kill switches are read; the
            current store when None.
    """

    def __init__(
        self,
        wrapped: Model | KnownModelName | str,
        *,
        breaker: str | Default | None = DEFAULT,
        retries: int | RetryPolicy | Default | None = DEFAULT,
        timeout: float | str | Default | None = DEFAULT,
        cache_ttl: str | float | None = None,
        flags: FlagSource | None = None,
    ) -> None:
        super().__init__(wrapped)
        if isinstance(retries, Default):
            retries = DEFAULT_ATTEMPTS
        if isinstance(retries, bool) or not isinstance(retries, int | RetryPolicy | None):
            raise ConfigurationError(
                f"ToolkitModel(retries={retries!r}): attempts in all, e.g. 3, or a RetryPolicy"
            )
        self.toolkit_breaker = (
            model_breaker_name(self.wrapped.system, self.wrapped.model_name)
            if isinstance(breaker, Default)
            else breaker
        )
        attempts = retries.attempts if isinstance(retries, RetryPolicy) else retries or 1
        self._toolkit_retries = attempts > 1
        policy = retries if isinstance(retries, RetryPolicy) or retries is None else int(retries)
        guard = resilient(
            breaker=self.toolkit_breaker,
            retries=policy,
            retry_on=model_errors if isinstance(policy, int) else None,
            timeout=timeout,
            flags=flags,
        )
        self._toolkit_send: Send = guard(self._request_once)
        self._toolkit_open_stream: Callable[..., Coroutine[Any, Any, StreamedResponse]] = guard(
            self._open_stream_once
        )
        self._toolkit_cache = (
            None
            if cache_ttl is None
            else RequestCache(self.wrapped, ttl=cache_ttl, send=self._toolkit_send, flags=flags)
        )

    def _toolkit_settings(self, model_settings: ModelSettings | None) -> ModelSettings | None:
        if not self._toolkit_retries:
            return model_settings
        # One attempt per toolkit attempt: the SDK client would retry each of them again.
        return {**(model_settings or {}), "max_retries": 0}

    async def _request_once(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        with model_call(self.wrapped) as call:
            response = await self.wrapped.request(
                messages, model_settings, model_request_parameters
            )
            answered(call, response)
        return response

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        settings = self._toolkit_settings(model_settings)
        if self._toolkit_cache is not None:
            return await self._toolkit_cache.request(messages, settings, model_request_parameters)
        response: ModelResponse = await self._toolkit_send(
            messages, settings, model_request_parameters
        )
        return response

    async def _open_stream_once(self, stack: AsyncExitStack, *arguments: Any) -> StreamedResponse:
        # Each attempt enters its own context: a failed one is left behind, closed.
        attempt = AsyncExitStack()
        async with attempt:
            stream = await attempt.enter_async_context(self.wrapped.request_stream(*arguments))
            stack.push_async_exit(attempt.pop_all())
        return stream

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        # Recorded when the stream is done with (read to its end or left), not when it
        # opened: what it spent is known only then.
        with model_call(self.wrapped, stream=True) as call:
            started = time.perf_counter()
            async with AsyncExitStack() as stack:
                stream = await self._toolkit_open_stream(
                    stack,
                    messages,
                    self._toolkit_settings(model_settings),
                    model_request_parameters,
                    run_context,
                )
                yield stream
                answered(call, stream.get())
                # pydantic-ai stamps the first event its consumer received (None: none was).
                first = stream.time_to_first_chunk(started)
                if first is not None:
                    call.first_chunk(after=first)
