"""The per-caller cache of deterministic model requests, on the toolkit's ``@cached``.

A request is deterministic when its settings ask for ``temperature`` 0: only then is the same
answer meant to come back, and only then is it served from the cache. Its key material is the
model, the request's settings and tools, and the messages' content, without what differs
between two runs of the same conversation (timestamps, run and response ids, usage); the
caller of the request being served (the ``cache.caller`` setting, as for responses) is part
of the key, so an answer is never served to another caller. Outside a request there is no
caller, and the request goes to the model uncached.

A request answered from the cache reports no token usage: no tokens were spent for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_core import to_json

from toolkit.cache import cached
from toolkit.errors import NoRequestError
from toolkit.flags import FlagSource

NAMESPACE: Final = "pydantic_ai"
"""The key prefix and ``toolkit.cache.name`` of the cached model requests."""

# What changes between two runs of one conversation, and says nothing about what was asked.
_VOLATILE: Final = frozenset(
    {
        "timestamp",
        "run_id",
        "conversation_id",
        "provider_response_id",
        "provider_details",
        "usage",
        "metadata",
    }
)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


def is_deterministic(model_settings: ModelSettings | None) -> bool:
    return (model_settings or {}).get("temperature") == 0


class _Call:
    """One request, handed to the cached function beside its key material."""

    __slots__ = ("messages", "parameters", "sent", "settings")

    def __init__(
        self,
        messages: list[ModelMessage],
        settings: ModelSettings | None,
        parameters: ModelRequestParameters,
    ) -> None:
        self.messages = messages
        self.settings = settings
        self.parameters = parameters
        self.sent = False


class RequestCache:
    """Deterministic requests of one model, served per caller from the app's cache store."""

    def __init__(
        self,
        model: Model,
        *,
        ttl: str | float,
        send: Callable[..., Awaitable[ModelResponse]],
        flags: FlagSource | None,
    ) -> None:
        self.model = model
        self.send = send

        @cached(
            ttl=ttl,
            key=lambda material, call: material,
            namespace=NAMESPACE,
            per_caller=True,
            flags=flags,
        )
        async def answer(material: str, call: _Call) -> Any:
            call.sent = True
            response = await send(call.messages, call.settings, call.parameters)
            return ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]

        self._answer = answer

    def material(
        self,
        messages: list[ModelMessage],
        settings: ModelSettings | None,
        parameters: ModelRequestParameters,
    ) -> str:
        """A digest of what the request asks: the same for the same question. What JSON
        cannot hold is keyed by its ``repr``, and a set in its iteration order: at worst a
        miss (another process, an object's address), never another question's answer."""
        asked = {
            "model": self.model.model_name,
            "system": self.model.system,
            "messages": _stable(ModelMessagesTypeAdapter.dump_python(messages, mode="json")),
            "settings": settings or {},
            "parameters": parameters,
        }
        return hashlib.blake2b(to_json(asked, fallback=repr), digest_size=16).hexdigest()

    async def request(
        self,
        messages: list[ModelMessage],
        settings: ModelSettings | None,
        parameters: ModelRequestParameters,
    ) -> ModelResponse:
        if not is_deterministic(settings):
            return await self.send(messages, settings, parameters)
        call = _Call(messages, settings, parameters)
        try:
            stored = await self._answer(self.material(messages, settings, parameters), call)
        except NoRequestError:
            return await self.send(messages, settings, parameters)
        response = cast(ModelResponse, ModelMessagesTypeAdapter.validate_python([stored])[0])
        if not call.sent:  # from the cache: nothing was spent for it
            response = dataclasses.replace(response, usage=type(response.usage)())
        return response
