"""``instrument(client)``: the toolkit on one OpenAI SDK client, undone by ``uninstrument``.

It replaces, on that client's own resource objects (never on the SDK's classes), the
methods that call a model: ``chat.completions.create``, ``responses.create`` and
``embeddings.create``. Each call is then recorded through ``toolkit.llm_call`` (a
``chat {model}`` / ``embeddings {model}`` CLIENT span with the server's address and port, the
GenAI metrics; a stream measured until it ends or the caller closes it) and, on an
``AsyncOpenAI`` client, guarded per model (``_guard``) and, where opted in, its embeddings
served per text from the cache (``_embeddings``). ``client.with_options(...)`` and
``client.copy(...)`` return clients instrumented the same way. Instrumenting a client twice
changes nothing.

Explicit rather than automatic: a client made by a framework that traces its own calls
(pydantic-ai's OpenAI provider) would otherwise be traced twice and retried at two layers,
and the clients most apps make at import time exist before ``install()`` runs.

Left as the SDK has them: ``with_raw_response`` / ``with_streaming_response`` calls (passed
through, unrecorded), the ``.stream()`` / ``.parse()`` helpers and every other resource.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import openai

from toolkit import DEFAULT
from toolkit._default import Default
from toolkit.agents import LLMCall, Operation, llm_call
from toolkit.flags import FlagSource
from toolkit.plugins import PluginContext
from toolkit.resilience import RetryPolicy
from toolkit_openai import _read
from toolkit_openai._embeddings import EmbeddingCache
from toolkit_openai._endpoint import Endpoint, endpoint_of
from toolkit_openai._guard import Guards
from toolkit_openai._versions import SUPPORTED

logger = logging.getLogger("toolkit.plugins.openai")

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)

_STATE: Final = "_toolkit_openai"
"""The attribute of an instrumented client holding its :class:`_Instrumented`."""
# The SDK marks its raw and streamed-response wrappers with this header: such calls return
# the HTTP response, not the answer, and are passed through.
_RAW_RESPONSE_HEADER: Final = "x-stainless-raw-response"
_LOWEST: Final = (1, 66)
_BELOW: Final = (4,)


@dataclass(frozen=True, slots=True)
class _Kind:
    """One kind of model call: where its method is, and how its request and answer read."""

    path: str
    operation: Operation
    answer: Callable[[LLMCall, Any], None]
    items: Callable[[LLMCall], Callable[[Any], None]] | None = None
    """What reads a stream's items (chunks, events), made per call; None: never streamed."""
    prompt: tuple[str, Callable[[LLMCall, Any], None]] | None = None
    """The request's argument holding the prompt, and what reads it."""


_CHAT: Final = _Kind(
    "chat.completions",
    "chat",
    _read.chat_completion,
    _read.ChunkReader,
    ("messages", _read.request_messages),
)
_RESPONSES: Final = _Kind(
    "responses", "chat", _read.response, _read.EventReader, ("input", _read.response_input)
)
_EMBEDDINGS: Final = _Kind("embeddings", "embeddings", _read.embeddings)


def apply(context: PluginContext) -> None:
    """What ``install()`` calls: nothing global to set up (clients are instrumented
    explicitly), a warning when the installed SDK is outside the supported range."""
    version = tuple(int(part) for part in openai.__version__.split(".")[:2] if part.isdigit())
    if not _LOWEST <= version < _BELOW:
        logger.warning(
            "toolkit-openai supports %s; openai %s is installed: calls are recorded as far as "
            "its answers look as they did",
            SUPPORTED,
            openai.__version__,
        )


def _raw(kwargs: dict[str, Any]) -> bool:
    headers = kwargs.get("extra_headers") or {}
    return any(str(key).lower() == _RAW_RESPONSE_HEADER for key in headers)


class _Options:
    """What ``instrument()`` was given, checked once, for the client and its copies."""

    __slots__ = ("breakers", "embeddings_ttl", "flags", "provider", "retries", "timeout")

    def __init__(
        self,
        provider: str | Default,
        breakers: bool,
        retries: int | RetryPolicy | Default | None,
        timeout: float | str | Default | None,
        embeddings_ttl: str | float | None,
        flags: FlagSource | None,
    ) -> None:
        self.provider = None if isinstance(provider, Default) else str(provider)
        self.breakers = bool(breakers)
        self.retries = retries
        self.timeout = timeout
        self.embeddings_ttl = embeddings_ttl
        self.flags = flags


class _Instrumented:
    """One instrumented client: its endpoint, its policies, and the methods it replaced."""

    def __init__(self, client: Any, options: _Options) -> None:
        self.client = client
        self.options = options
        self.endpoint: Endpoint = endpoint_of(client, options.provider)
        self.is_async = isinstance(client, openai.AsyncOpenAI)
        self.replaced: list[tuple[object, str]] = []
        self.guards: Guards | None = None
        self.embedding_cache: EmbeddingCache | None = None
        self._bare: Any = None
        self._embeddings_original: Callable[..., Any] = _unset
        self._copy = client.copy
        if self.is_async:
            self.guards = Guards(
                self.endpoint.provider,
                breakers=options.breakers,
                retries=options.retries,
                timeout=options.timeout,
                flags=options.flags,
            )
            if options.embeddings_ttl is not None:
                self.embedding_cache = EmbeddingCache(
                    self._embeddings_recorded,
                    where=str(client.base_url),
                    ttl=options.embeddings_ttl,
                    flags=options.flags,
                )

    # --- wrapping ---------------------------------------------------------------------------

    def wrap(self) -> None:
        client = self.client
        for kind in (_CHAT, _RESPONSES, _EMBEDDINGS):
            resource = _resource(client, kind.path)
            if resource is None:  # an SDK without it
                continue
            original = resource.create
            if not self.is_async:
                wrapper = self._sync_call(original, kind)
            elif kind is _EMBEDDINGS:
                wrapper = self._async_embeddings(original)
            else:
                wrapper = self._async_call(original, kind)
            self._replace(resource, "create", wrapper)
        copy = self._instrumented_copy
        self._replace(client, "copy", copy)
        self._replace(client, "with_options", copy)
        setattr(client, _STATE, self)

    def _replace(self, owner: Any, name: str, method: Callable[..., Any]) -> None:
        setattr(owner, name, method)
        self.replaced.append((owner, name))

    def unwrap(self) -> None:
        for owner, name in reversed(self.replaced):
            vars(owner).pop(name, None)  # the class's own method shows through again
        self.replaced.clear()
        vars(self.client).pop(_STATE, None)

    def _instrumented_copy(self, *args: Any, **kwargs: Any) -> Any:
        copied = self._copy(*args, **kwargs)
        _Instrumented(copied, self.options).wrap()
        return copied

    # --- one call -----------------------------------------------------------------------------

    def _open(self, model: str, operation: Operation, stream: bool) -> LLMCall:
        endpoint = self.endpoint
        return llm_call(
            model,
            provider=endpoint.provider,
            operation=operation,
            stream=stream,
            server_address=endpoint.address,
            server_port=endpoint.port,
            flags=self.options.flags,
        )

    def _sync_call(self, original: Callable[..., Any], kind: _Kind) -> Callable[..., Any]:
        def create(*args: Any, **kwargs: Any) -> Any:
            if args or _raw(kwargs):
                return original(*args, **kwargs)
            streaming = kwargs.get("stream") is True
            call = self._open(str(kwargs.get("model", "")), kind.operation, streaming)
            with call:
                self._before(call, kind, kwargs)
                answer = original(**kwargs)
                if streaming and kind.items is not None:
                    return call.stream(answer, on_chunk=kind.items(call))
                kind.answer(call, answer)
                return answer

        return create

    def _async_call(self, original: Callable[..., Any], kind: _Kind) -> Callable[..., Any]:
        async def create(*args: Any, **kwargs: Any) -> Any:
            if args or _raw(kwargs):
                return await original(*args, **kwargs)
            model = str(kwargs.get("model", ""))
            streaming = kwargs.get("stream") is True
            call = self._open(model, kind.operation, streaming)
            with call:
                self._before(call, kind, kwargs)
                answer = await self._send(original, kind, model, kwargs)
                if streaming and kind.items is not None:
                    return call.stream(answer, on_chunk=kind.items(call))
                kind.answer(call, answer)
                return answer

        return create

    def _before(self, call: LLMCall, kind: _Kind, kwargs: dict[str, Any]) -> None:
        """What is known before the request: the prompt, when content is captured."""
        if not call.recording:
            return
        if kind.prompt is not None:
            argument, read = kind.prompt
            read(call, kwargs.get(argument))

    async def _send(
        self, original: Callable[..., Any], kind: _Kind, model: str, kwargs: dict[str, Any]
    ) -> Any:
        """The request through the model's guard, the SDK's retries off where the toolkit
        retries; as it is when the ``resilience`` flag is off."""
        guards = self.guards
        if guards is None or guards.inert or not guards.on():
            return await original(**kwargs)
        method = original
        if guards.retrying:
            if self._bare is None:
                self._bare = self._copy(max_retries=0)  # made once, never instrumented
            method = _resource(self._bare, kind.path).create
        return await guards.get(model)(method, kwargs)

    async def _embeddings_recorded(self, kwargs: dict[str, Any]) -> Any:
        model = str(kwargs.get("model", ""))
        call = self._open(model, "embeddings", False)
        with call:
            self._before(call, _EMBEDDINGS, kwargs)
            answer = await self._send(self._embeddings_original, _EMBEDDINGS, model, kwargs)
            _read.embeddings(call, answer)
            return answer

    def _async_embeddings(self, original: Callable[..., Any]) -> Callable[..., Any]:
        self._embeddings_original = original

        async def create(*args: Any, **kwargs: Any) -> Any:
            if args or _raw(kwargs):
                return await original(*args, **kwargs)
            if self.embedding_cache is not None:
                answer = await self.embedding_cache.create(kwargs)
                if answer is not None:
                    return answer
            return await self._embeddings_recorded(kwargs)

        return create


async def _unset(**kwargs: Any) -> Any:
    raise RuntimeError("toolkit_openai: the embeddings method was not wrapped")


def _resource(client: Any, path: str) -> Any:
    owner = client
    for part in path.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner


def instrument(
    client: C,
    *,
    provider: str | Default = DEFAULT,
    breakers: bool = True,
    retries: int | RetryPolicy | Default | None = DEFAULT,
    timeout: float | str | Default | None = DEFAULT,
    embeddings_ttl: str | float | None = None,
    flags: FlagSource | None = None,
) -> C:
    """Record ``client``'s model calls through the toolkit and, on an ``AsyncOpenAI``
    client, guard them; returns the same client. A sync ``OpenAI`` client is recorded, not
    guarded (the breakers are async; the README says how to guard sync code's calls): it
    keeps the SDK's own retries and timeout.

        client = toolkit_openai.instrument(openai.AsyncOpenAI(), embeddings_ttl="30d")

    Args:
        client: an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (or a subclass: Azure's).
        provider: ``gen_ai.provider.name`` and the breakers' prefix; from the base URL's host
            by default (``openai`` for any host it does not know).
        breakers: a circuit breaker per model, ``{provider}:{model}`` (its
            ``resilience.breakers."{provider}:{model}"`` settings apply); False for none.
            Async clients only.
        retries: attempts in all (retrying ``toolkit.resilience.provider_errors``), or a
            ``RetryPolicy``; 3 by default; None for one. While the toolkit retries, the
            SDK's own retries are off. Async clients only: a sync client keeps its own.
        timeout: deadline of one call, retries included (a stream's: until it opens); the
            ``resilience.timeout`` setting by default; None for none. Async clients only.
        embeddings_ttl: how long each text's vector is kept in the app's cache store, e.g.
            ``"30d"``, so a text is never sent twice; None (the default) caches nothing.
            Async clients only.
        flags: where the ``tracing.agents``, ``resilience`` and ``cache.embeddings`` kill
            switches are read; the current flags when None.

    Raises:
        ConfigurationError: an invalid option.
    """
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(
            f"toolkit_openai.instrument() takes an openai.OpenAI or openai.AsyncOpenAI, not "
            f"{type(client).__name__}"
        )
    if is_instrumented(client):
        return client
    options = _Options(provider, breakers, retries, timeout, embeddings_ttl, flags)
    _Instrumented(client, options).wrap()
    return client


def is_instrumented(client: object) -> bool:
    """Whether ``instrument()`` applies to ``client`` now."""
    return isinstance(
        vars(client).get(_STATE) if hasattr(client, "__dict__") else None, _Instrumented
    )


def uninstrument(client: object) -> None:
    """Give ``client`` its SDK methods back (its copies keep theirs); nothing if it is not
    instrumented."""
    state = vars(client).get(_STATE) if hasattr(client, "__dict__") else None
    if isinstance(state, _Instrumented):
        state.unwrap()
