"""ASGI plumbing of the response cache: sending a stored entry, labelling a response the app
sends, and reading a request body the app must still be able to read."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Final

from starlette.types import Message, Receive, Send

from toolkit.cache._capture import AGE, X_CACHE
from toolkit.cache._entry import Entry
from toolkit.cache._keys import canonical_json

HIT: Final = (X_CACHE, b"HIT")
STALE: Final = (X_CACHE, b"STALE")


async def send_entry(send: Send, entry: Entry, label: tuple[bytes, bytes], age: float) -> None:
    """Send ``entry`` as the response, with ``label`` and its ``Age`` in whole seconds, in
    as many body messages as the app sent."""
    headers = [*entry.headers, label, (AGE, b"%d" % max(0, int(age)))]
    await send({"type": "http.response.start", "status": entry.status, "headers": headers})
    if not entry.sizes:
        await send({"type": "http.response.body", "body": entry.body})
        return
    chunks = entry.chunks()
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):  # a stream, cut as it was (server-sent events)
        await send({"type": "http.response.body", "body": chunk, "more_body": i < last})


def labelled(send: Send, label: tuple[bytes, bytes]) -> Send:
    """A ``send`` that adds ``X-Cache`` to the response start; the body passes as is."""

    async def send_labelled(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0].lower() != X_CACHE]
            message["headers"] = [*headers, label]
        await send(message)

    return send_labelled


async def read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The messages read and the request body in canonical form: the canonical JSON, or
    ``b""`` when there is no body. None for a body that cannot be keyed: over ``limit``, not
    JSON, or cut short by a disconnect (the messages are replayed to the app all the same)."""
    received: list[Message] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received, None
        size += len(message.get("body", b""))
        if size > limit:
            return received, None
        if not message.get("more_body", False):
            break
    raw = b"".join(m.get("body", b"") for m in received)
    if not raw:
        return received, b""
    try:
        return received, canonical_json(json.loads(raw))
    except (ValueError, TypeError, RecursionError):  # RecursionError: nesting too deep
        return received, None


def replaying(received: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the app what was read, then what follows."""
    pending = deque(received)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def one_request(body: bytes) -> Receive:
    """The ``receive`` of a replayed request: its body, then a client that never leaves."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # until the refresh ends and cancels whoever listens
        return {"type": "http.disconnect"}

    return receive
