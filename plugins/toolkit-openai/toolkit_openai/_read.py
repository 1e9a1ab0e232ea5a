"""What an OpenAI answer says of itself, told to the call recording it (``toolkit.LLMCall``).

Read by shape (``getattr``), never by type: the SDK's models changed across major versions,
and a raw or custom answer simply records less. A Chat Completions answer and its stream
chunks, a Responses API answer and its stream events, an embeddings answer. Prompt and
completion text is read only when the call captures content (opted in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from toolkit.agents import LLMCall

MAX_STREAMED_TEXT: Final = 65536
"""Characters of a streamed completion kept for content capture (opted in), per choice;
the recorder cuts what it records to ``agents.content_max_length`` anyway."""

# Responses API stream events that carry the whole response, usage included.
_FINAL_EVENTS: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _field(value: Any, name: str) -> Any:
    """``value.name``, or ``value[name]``: an SDK older than a field keeps it as a dict."""
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _usage(call: LLMCall, usage: Any, input_name: str, output_name: str, details: str) -> None:
    if usage is None:
        return
    cached = _field(_field(usage, details), "cached_tokens")
    call.usage(
        input_tokens=getattr(usage, input_name, None),
        output_tokens=getattr(usage, output_name, None),
        cache_read_input_tokens=cached if isinstance(cached, int) else None,
    )


def chat_usage(call: LLMCall, usage: Any) -> None:
    _usage(call, usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details")


def request_messages(call: LLMCall, messages: Any) -> None:
    """The prompt (Chat Completions ``messages``), when content is captured."""
    if call.capture_content and isinstance(messages, Iterable) and not isinstance(messages, str):
        call.input_messages([m for m in messages if isinstance(m, Mapping)])


def chat_completion(call: LLMCall, completion: Any) -> None:
    choices = getattr(completion, "choices", None) or []
    call.response(
        model=getattr(completion, "model", None),
        response_id=getattr(completion, "id", None),
        finish_reasons=[str(getattr(c, "finish_reason", None) or "") for c in choices] or None,
    )
    chat_usage(call, getattr(completion, "usage", None))
    if call.capture_content:
        call.output_messages(
            [
                {
                    "role": "assistant",
                    "content": getattr(getattr(c, "message", None), "content", None),
                    "finish_reason": getattr(c, "finish_reason", None) or "",
                }
                for c in choices
            ]
        )


class ChunkReader:
    """Reads a Chat Completions stream chunk by chunk: the model and id (first chunk), each
    choice's finish reason, the usage chunk (sent when the request set
    ``stream_options={"include_usage": True}``) and, when captured, the text."""

    __slots__ = ("_call", "_finish", "_named", "_texts")

    def __init__(self, call: LLMCall) -> None:
        self._call = call
        self._named = False
        self._finish: dict[int, str] = {}
        self._texts: dict[int, list[str]] = {}

    def __call__(self, chunk: Any) -> None:
        call = self._call
        if not self._named:
            self._named = True
            call.response(
                model=getattr(chunk, "model", None), response_id=getattr(chunk, "id", None)
            )
        finished = False
        for choice in getattr(chunk, "choices", None) or ():
            index = getattr(choice, "index", 0) or 0
            if call.capture_content:
                self._keep(index, getattr(getattr(choice, "delta", None), "content", None))
            reason = getattr(choice, "finish_reason", None)
            if reason:
                self._finish[index] = str(reason)
                finished = True
        if finished:
            call.response(finish_reasons=[self._finish[i] for i in sorted(self._finish)])
            if call.capture_content:
                call.output_messages(
                    [
                        {
                            "role": "assistant",
                            "content": "".join(self._texts.get(i, ())),
                            "finish_reason": self._finish.get(i, ""),
                        }
                        for i in sorted(self._finish)
                    ]
                )
        chat_usage(call, getattr(chunk, "usage", None))

    def _keep(self, index: int, text: object) -> None:
        if not isinstance(text, str) or not text:
            return
        kept = self._texts.setdefault(index, [])
        room = MAX_STREAMED_TEXT - sum(len(piece) for piece in kept)
        if room > 0:
            kept.append(text[:room])


def response_input(call: LLMCall, given: Any) -> None:
    """The Responses API ``input`` (a text or messages), when content is captured."""
    if not call.capture_content:
        return
    if isinstance(given, str):
        call.input_messages(given)
    elif isinstance(given, Iterable):
        call.input_messages([m for m in given if isinstance(m, Mapping) and "role" in m])


def response(call: LLMCall, answer: Any) -> None:
    """A Responses API answer: ``status`` (or why it is incomplete) is its finish reason."""
    incomplete = getattr(getattr(answer, "incomplete_details", None), "reason", None)
    status = incomplete or getattr(answer, "status", None)
    call.response(
        model=getattr(answer, "model", None),
        response_id=getattr(answer, "id", None),
        finish_reasons=None if status is None else [str(status)],
    )
    _usage(
        call,
        getattr(answer, "usage", None),
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
    )
    if call.capture_content:
        text = getattr(answer, "output_text", None)
        if isinstance(text, str):
            call.output_messages(text)


class EventReader:
    """Reads a Responses API stream event by event: the last one carries the whole
    response, usage included."""

    __slots__ = ("_call",)

    def __init__(self, call: LLMCall) -> None:
        self._call = call

    def __call__(self, event: Any) -> None:
        if getattr(event, "type", None) in _FINAL_EVENTS:
            response(self._call, getattr(event, "response", None))


def embeddings(call: LLMCall, answer: Any) -> None:
    call.response(model=getattr(answer, "model", None))
    usage = getattr(answer, "usage", None)
    if usage is not None:
        call.usage(input_tokens=getattr(usage, "prompt_tokens", None))
