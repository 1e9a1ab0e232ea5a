"""Prompt and completion content: off unless opted in, and then cut to the configured size.

The opt-in is the OpenTelemetry convention, ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``:
``true`` (its first form) or, under the latest GenAI conventions, ``SPAN_ONLY`` or
``SPAN_AND_EVENT``; the toolkit records content on spans only (it emits no GenAI events), so
``EVENT_ONLY`` and ``NO_CONTENT`` capture nothing. The ``agents.capture_content`` setting, when
set, decides over the variable.

What is recorded is the conventions' JSON form, ``[{"role": "user", "parts": [{"type": "text",
"content": "..."}]}]``: the last ``content_max_messages`` messages, each text (or other string
field of a part) cut to ``content_max_length`` characters, so the JSON stays valid.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

logger = logging.getLogger("toolkit.agents")

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_ON: Final = frozenset({"TRUE", "1", "SPAN_ONLY", "SPAN_AND_EVENT"})
_OFF: Final = frozenset({"", "FALSE", "0", "NO_CONTENT", "EVENT_ONLY"})
MAX_ROLE_LENGTH: Final = 64
"""Characters of a role or finish reason: words, never content."""

Messages = str | Iterable[Mapping[str, Any]]
"""A text (one message), or messages as mappings: ``{"role": ..., "content": "text"}`` or the
conventions' ``{"role": ..., "parts": [...]}`` (with ``finish_reason`` on output messages)."""


def capture_content(setting: bool | None, environ: Mapping[str, str]) -> bool:
    """Whether content is recorded: the setting when set, else the variable."""
    if setting is not None:
        return setting
    value = environ.get(CAPTURE_CONTENT_ENV, "").strip().upper()
    if value not in _ON and value not in _OFF:
        logger.warning(
            "%s=%r is not a value the GenAI conventions define; content is not recorded. Use "
            "SPAN_ONLY (or true) to record it on spans, NO_CONTENT (or false) not to.",
            CAPTURE_CONTENT_ENV,
            environ.get(CAPTURE_CONTENT_ENV),
        )
    return value in _ON


def messages_json(messages: Messages, role: str, *, max_length: int, max_messages: int) -> str:
    """``messages`` as the conventions' JSON, bounded; ``role`` for those that name none."""
    if isinstance(messages, str):
        messages = [{"role": role, "content": messages}]
    kept = list(messages)[-max_messages:]
    shaped = [_message(message, role, max_length, max_messages) for message in kept]
    return json.dumps(shaped, ensure_ascii=False, default=str)


def _message(message: Any, role: str, max_length: int, max_parts: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        return {"role": role, "parts": [_text(message, max_length)]}
    shaped: dict[str, Any] = {"role": _cut(str(message.get("role", role)), MAX_ROLE_LENGTH)}
    parts = message.get("parts")
    if parts is None:
        content = message.get("content")
        parts = [] if content is None else [content]
    elif isinstance(parts, str | bytes) or not isinstance(parts, Iterable):
        parts = [parts]
    shaped["parts"] = [_part(part, max_length) for part in list(parts)[:max_parts]]
    if "finish_reason" in message:
        shaped["finish_reason"] = _cut(str(message["finish_reason"]), MAX_ROLE_LENGTH)
    return shaped


def _part(part: Any, max_length: int) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        return _text(part, max_length)
    return {str(key): _value(value, max_length) for key, value in part.items()}


def _text(value: Any, max_length: int) -> dict[str, Any]:
    return {"type": "text", "content": _value(value, max_length)}


def _value(value: Any, max_length: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return _cut(value, max_length)


def _cut(text: str, max_length: int) -> str:
    return text if len(text) <= max_length else text[:max_length]
