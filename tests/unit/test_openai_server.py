"""The local OpenAI-compatible server the plugin tests use answers the real OpenAI SDK as the
service would: chat (plain and streamed, with the usage chunk), embeddings, scripted
failures and stalls, and a record of what it received."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.support.openai_server import (
    Failure,
    OpenAIServer,
    Reply,
    Stall,
    ToolCall,
    Usage,
    embedding,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


@pytest.fixture
async def client(server: OpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    server.reset()
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="test", max_retries=0
    ) as opened:
        yield opened


async def test_openai_server_answers_a_chat_completion_with_its_scripted_text_and_usage(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    """The SDK parses the answer: text, model, finish reason and the scripted token usage."""
    server.script(Reply("Paris", usage=Usage(12, 1, cached_tokens=4)))
    answer = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert answer.choices[0].message.content == "Paris"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "gpt-test"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 1)
    assert answer.usage.model_dump()["prompt_tokens_details"]["cached_tokens"] == 4
    [received] = server.received()
    assert received.body["messages"][0]["content"] == "Capital of France?"
    assert received.headers["authorization"] == "Bearer test"


async def test_openai_server_streams_chunks_then_the_usage_chunk_when_asked(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    """A stream carries the text word by word, its finish reason, and usage last (only when
    ``stream_options.include_usage`` asks for it)."""
    server.script(Reply("one two three", usage=Usage(5, 3)), Reply("again"))
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3

    plain = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert [chunk.usage async for chunk in plain] == [None] * 3  # role, "again", finish
    assert [request.stream for request in server.received()] == [True, True]


async def test_openai_server_answers_tool_calls(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.script(Reply(tool_calls=(ToolCall("weather", {"city": "Oslo"}),)))
    answer = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "weather?"}]
    )
    [call] = answer.choices[0].message.tool_calls or []
    assert call.function.name == "weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city": "Oslo"}'  # type: ignore[union-attr]
    assert answer.choices[0].finish_reason == "tool_calls"


async def test_openai_server_embeds_each_input_the_same_way_every_time(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    answer = await client.embeddings.create(model="emb", input=["a", "b"], dimensions=4)
    assert [item.embedding for item in answer.data] == [embedding("a", 4), embedding("b", 4)]
    assert embedding("a", 4) != embedding("b", 4)
    assert server.received("/v1/embeddings")[0].body["input"] == ["a", "b"]


async def test_openai_server_fails_as_scripted_then_answers_again(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    """A 500, then a 429 with its Retry-After, each raised by the SDK; then the default."""
    server.script(Failure(500), Failure(429, retry_after=7))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=[])
    assert limited.value.response.headers["retry-after"] == "7"
    answer = await client.chat.completions.create(model="m", messages=[])
    assert answer.choices[0].message.content == "Hello from the test server."
    assert len(server.received()) == 3


async def test_openai_server_stalls_so_a_client_timeout_fires(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.script(Stall(5))
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.2).chat.completions.create(model="m", messages=[])
    assert len(server.received()) == 1
