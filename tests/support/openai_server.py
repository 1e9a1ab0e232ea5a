"""A real OpenAI-compatible HTTP server for tests: a small ASGI app served by uvicorn in a
thread, on a free loopback port.

    with OpenAIServer() as server:
        server.script(Reply("Paris", usage=Usage(12, 1)), Failure(500))
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        assert len(server.requests) == 2

It serves ``POST /v1/chat/completions`` (a JSON answer, or with ``"stream": true`` SSE
``data:`` chunks ending in ``data: [DONE]``, with a last usage chunk when
``stream_options.include_usage`` is set) and ``POST /v1/embeddings`` (a vector per input,
the same input always giving the same vector) and ``POST /v1/responses`` (the Responses API:
a JSON answer, or its events when streamed). What each request gets is the next step of
the script, else the default: a :class:`Reply` (text or tool calls, token usage), a
:class:`Failure` (any status, ``Retry-After``, an OpenAI error body) or a :class:`Stall`
(waits before answering, for timeouts). Every request is recorded in ``requests`` (path,
headers, JSON body) as it arrives, before it is answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import free_port


@dataclass(frozen=True)
class Usage:
    """Token usage reported with an answer (``cached`` of the prompt tokens were cache reads)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asks for; ``arguments`` is sent as JSON."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True)
class Reply:
    """A successful chat answer: text, or tool calls; ``usage`` None counts words."""

    text: str = "Hello from the test server."
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    model: str | None = None
    """The answering model; the requested one when None."""
    finish_reason: str | None = None
    """``stop``, or ``tool_calls`` when there are tool calls, when None."""
    chunk_delay: float = 0.0
    """Seconds between two streamed chunks."""


@dataclass(frozen=True)
class Failure:
    """An error answer: ``status`` with an OpenAI error body (``Retry-After`` if given)."""

    status: int = 500
    message: str = "the test server was told to fail"
    retry_after: float | None = None


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` before answering with ``then`` (a client timeout fires first)."""

    seconds: float
    then: Reply | Failure = field(default_factory=Reply)


Step = Reply | Failure | Stall


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def _words(text: str) -> int:
    return len(text.split())


def _prompt_words(body: dict[str, Any]) -> int:
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            total += _words(content)
        elif isinstance(content, list):
            total += sum(_words(part.get("text", "")) for part in content if isinstance(part, dict))
    return max(total, 1)


def embedding(text: str, dimensions: int) -> list[float]:
    """The vector the server answers for ``text``: the same text, the same vector."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((n / 2**31) - 1.0 for n in struct.unpack("<8I", digest))
        counter += 1
    return values[:dimensions]


class OpenAIServer:
    """The server, its script and its record; a context manager that starts and stops it."""

    def __init__(self, *, default: Reply | None = None, dimensions: int = 8) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.default = default or Reply()
        self.dimensions = dimensions
        self.requests: list[ReceivedRequest] = []
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
            ]
        )

    # -- the script ------------------------------------------------------------------------

    def script(self, *steps: Step) -> None:
        """Answer the next requests with ``steps``, in order, then with the default."""
        with self._lock:
            self._steps.extend(steps)

    def fail(self, status: int = 500, *, times: int = 1, retry_after: float | None = None) -> None:
        """The next ``times`` requests fail with ``status``."""
        self.script(*[Failure(status, retry_after=retry_after)] * times)

    def reset(self) -> None:
        """Forget the script and the record."""
        with self._lock:
            self._steps.clear()
            self.requests.clear()

    def received(self, path: str = "/v1/chat/completions") -> list[ReceivedRequest]:
        """The requests received on ``path``, in order."""
        return [request for request in self.requests if request.path == path]

    def _next(self, default: Step) -> Step:
        with self._lock:
            return self._steps.popleft() if self._steps else default

    # -- the endpoints ---------------------------------------------------------------------

    async def _receive(self, request: Request) -> ReceivedRequest:
        body = await request.json()
        received = ReceivedRequest(request.url.path, dict(request.headers), body)
        with self._lock:
            self.requests.append(received)
        return received

    async def _resolve(self, step: Step) -> Reply | Failure:
        if isinstance(step, Stall):
            await asyncio.sleep(step.seconds)
            return step.then
        return step

    async def _chat(self, request: Request) -> Response:
        received = await self._receive(request)
        step = await self._resolve(self._next(self.default))
        if isinstance(step, Failure):
            return _failure(step)
        body = received.body
        model = step.model or body.get("model", "test-model")
        usage = step.usage or Usage(_prompt_words(body), max(_words(step.text), 1))
        finish = step.finish_reason or ("tool_calls" if step.tool_calls else "stop")
        ident = f"chatcmpl-{len(self.requests)}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _chunks(ident, model, step, finish, usage if include_usage else None)
            return StreamingResponse(_sse(chunks, step.chunk_delay), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if step.tool_calls:
            message["tool_calls"] = [_tool_call(call, i) for i, call in enumerate(step.tool_calls)]
        else:
            message["content"] = step.text
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage.body(),
            }
        )

    async def _embeddings(self, request: Request) -> Response:
        received = await self._receive(request)
        step = await self._resolve(self._next(Reply()))
        if isinstance(step, Failure):
            return _failure(step)
        inputs = received.body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        dimensions = int(received.body.get("dimensions") or self.dimensions)
        return JSONResponse(
            {
                "object": "list",
                "model": received.body.get("model", "test-embedding"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding(str(t), dimensions)}
                    for i, t in enumerate(texts)
                ],
                "usage": {
                    "prompt_tokens": sum(_words(str(t)) for t in texts),
                    "total_tokens": sum(_words(str(t)) for t in texts),
                },
            }
        )

    async def _responses(self, request: Request) -> Response:
        """The Responses API: a JSON answer, or with ``"stream": true`` its events (created,
        a text delta per word, completed with the usage)."""
        received = await self._receive(request)
        step = await self._resolve(self._next(self.default))
        if isinstance(step, Failure):
            return _failure(step)
        body = received.body
        prompt = body.get("input")
        words = _words(prompt) if isinstance(prompt, str) else _prompt_words({"messages": prompt})
        usage = step.usage or Usage(max(words, 1), max(_words(step.text), 1))
        answer = _response(
            f"resp_{len(self.requests)}", step.model or body.get("model"), step.text, usage
        )
        if not body.get("stream"):
            return JSONResponse(answer)
        events = [{"type": "response.created", "response": {**answer, "status": "in_progress"}}]
        events += [
            {
                "type": "response.output_text.delta",
                "delta": w,
                "output_index": 0,
                "content_index": 0,
                "item_id": "msg_0",
            }
            for w in step.text.split(" ")
        ]
        events.append({"type": "response.completed", "response": answer})
        numbered = [{**event, "sequence_number": i} for i, event in enumerate(events)]
        return StreamingResponse(_sse(numbered, step.chunk_delay), media_type="text/event-stream")

    # -- serving ---------------------------------------------------------------------------

    def __enter__(self) -> OpenAIServer:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",  # what every uvicorn version has, no extras
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="openai-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the OpenAI test server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # a stalled request does not hold the exit
            self._thread.join(10)
        self._server = self._thread = None


def _failure(step: Failure) -> Response:
    headers = {} if step.retry_after is None else {"retry-after": f"{step.retry_after:g}"}
    kind = "rate_limit_exceeded" if step.status == 429 else "server_error"
    return JSONResponse(
        {"error": {"message": step.message, "type": kind, "param": None, "code": kind}},
        status_code=step.status,
        headers=headers,
    )


def _tool_call(call: ToolCall, index: int) -> dict[str, Any]:
    return {
        "id": call.id or f"call_{index}",
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def _chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _chunks(
    ident: str, model: str, step: Reply, finish: str, usage: Usage | None
) -> list[dict[str, Any]]:
    """The stream of an answer: the role, the content word by word (or each tool call), the
    finish reason, then the usage chunk (no choices) when it was asked for."""
    chunks = [_chunk(ident, model, {"role": "assistant", "content": ""}, None)]
    if step.tool_calls:
        for index, call in enumerate(step.tool_calls):
            delta = {"tool_calls": [{"index": index, **_tool_call(call, index)}]}
            chunks.append(_chunk(ident, model, delta, None))
    else:
        words = step.text.split(" ")
        pieces = [word + " " for word in words[:-1]] + words[-1:]
        chunks += [_chunk(ident, model, {"content": piece}, None) for piece in pieces]
    chunks.append(_chunk(ident, model, {}, finish))
    if usage is not None:
        chunks.append({**_chunk(ident, model, {}, None), "choices": [], "usage": usage.body()})
    return chunks


async def _sse(chunks: Iterable[dict[str, Any]], delay: float) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        if delay:
            await asyncio.sleep(delay)
    yield b"data: [DONE]\n\n"


def _response(ident: str, model: str | None, text: str, usage: Usage) -> dict[str, Any]:
    """A completed Responses API answer holding one text message."""
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "model": model or "test-model",
        "status": "completed",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [
            {
                "type": "message",
                "id": "msg_0",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    }
