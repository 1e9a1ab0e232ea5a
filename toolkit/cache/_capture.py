"""The ``send`` of an origin run whose response may be stored.

It forwards the response to the client, keeps a copy within the size cap, judges at the
response start whether the response may be stored, and says so the moment it may not, so
that the callers waiting for this response can go on.

While the response may still be stored, messages reach the client through a relay of their
own: the app, and the copy the other callers wait for, never wait for a client that reads
slowly or has stopped reading. The relay holds only what the copy holds (the same bytes,
within the cap). Once the response may not be stored, the app waits for its client again,
as it would without the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

from starlette.types import Message, Send

X_CACHE: Final = b"x-cache"
AGE: Final = b"age"
MISS: Final = (X_CACHE, b"MISS")
BYPASS: Final = (X_CACHE, b"BYPASS")
# The app's own values of these are dropped (x-cache always; age from stored copies, since the
# cache's Age replaces it on replay): no response ever carries two.
OWN: Final = frozenset({X_CACHE, AGE})
_REFUSING_DIRECTIVES = frozenset({b"private", b"no-store", b"no-cache"})

Refusal = Callable[[bool], Awaitable[None]]
"""Called once, with whether the refusal is the response's own doing (its headers, its size)
rather than this request's outcome (a status the route does not store), before the message
that decided it is sent."""


class Capture:
    """Use as ``async with Capture(...) as capture: await app(scope, receive, capture)``.

    Args:
        send: the client's ``send``; None to run the app for the cache only (a refresh).
        statuses: the statuses that may be stored.
        accepted_vary: request headers a response's ``Vary`` may name: those the key covers.
        limit: the size cap, in body bytes.
        on_refused: told the moment the response is known not to be stored.
    """

    __slots__ = (
        "_accepted_vary",
        "_limit",
        "_on_refused",
        "_relay",
        "_send",
        "_statuses",
        "chunks",
        "complete",
        "headers",
        "passes",
        "refused",
        "size",
        "status",
    )

    def __init__(
        self,
        send: Send | None,
        *,
        statuses: frozenset[int],
        accepted_vary: frozenset[bytes],
        limit: int,
        on_refused: Refusal | None = None,
    ) -> None:
        self._send = send
        self._statuses = statuses
        self._accepted_vary = accepted_vary
        self._limit = limit
        self._on_refused = on_refused
        self._relay: _Relay | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.refused: str | None = None
        """Why the response may not be stored; None while it may."""
        self.passes = False
        """Whether the refusal is the response's own doing."""

    @property
    def storable(self) -> bool:
        """The whole response arrived, and nothing refused it."""
        return self.refused is None and self.complete and self.status in self._statuses

    async def __aenter__(self) -> Capture:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        relay = self._relay
        if relay is None:
            return
        if kind is None:
            await relay.drain()  # the client gets the rest; its failure is the app's
        elif issubclass(kind, Exception):
            # The client gets what the app sent before it failed, as it would without us.
            with contextlib.suppress(Exception):
                await relay.drain()
        await relay.close()

    async def __call__(self, message: Message) -> None:
        relay = self._relay
        if relay is not None and relay.failure is not None:
            raise relay.failure  # the client went away: the app hears it, as without us
        kind = message["type"]
        if kind == "http.response.body":
            if self.refused is None:
                chunk = bytes(message.get("body", b""))
                self.size += len(chunk)
                if self.size <= self._limit:
                    if chunk:
                        self.chunks.append(chunk)
                    self.complete = not message.get("more_body", False)
                    self._forward({**message, "body": chunk})
                    return
                await self._refuse("size", passes=True)
        elif kind == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (bytes(name), bytes(value))
                for name, value in message.get("headers", ())
                if name.lower() not in OWN
            ]
            reason, passes = self._judge(message)
            if reason is None:
                self._forward({**message, "headers": [*self.headers, MISS]})
                return
            message["headers"] = [*self.headers, BYPASS]
            await self._refuse(reason, passes=passes)
        elif self.refused is None:  # trailers, pathsend, zero-copy: not a body we can replay
            await self._refuse(kind, passes=True)
        if relay is not None:
            await relay.drain()  # in order: what was relayed goes first
        if self._send is not None:
            await self._send(message)

    def _forward(self, message: Message) -> None:
        if self._send is None:
            return
        if self._relay is None:
            self._relay = _Relay(self._send)
        self._relay.put(message)

    async def _refuse(self, reason: str, *, passes: bool) -> None:
        self.refused = reason
        self.passes = passes
        self.chunks = []
        if self._on_refused is not None:
            await self._on_refused(passes)

    def _judge(self, message: Message) -> tuple[str | None, bool]:
        """Why the response may not be stored (None if it may), and whether that is its own
        doing (``passes``) rather than this request's outcome."""
        if self.status not in self._statuses:
            # Not the response's nature but this request's outcome (an error, a redirect).
            return "status", False
        if message.get("trailers", False):
            return "trailers", True
        for name, value in self.headers:
            name = name.lower()
            if name == b"set-cookie":
                return "set-cookie", True
            if name == b"cache-control":
                directives = {d.strip().partition(b"=")[0].strip() for d in value.split(b",")}
                if {d.lower() for d in directives} & _REFUSING_DIRECTIVES:
                    return "cache-control", True
            elif name == b"vary":
                # RFC 9111 4.1: a stored response matches only requests with the same values
                # of the headers Vary names; the key must cover them, and `*` matches nothing.
                listed = {f.strip().lower() for f in value.split(b",")} - {b""}
                if listed - self._accepted_vary:
                    return "vary", True
            elif name == b"content-length":
                length = value.strip()
                if length.isdigit() and int(length) > self._limit:
                    return "size", True
        return None, False


class _Relay:
    """Sends messages to the client in order, from a task of its own."""

    __slots__ = ("_queue", "_send", "_task", "failure")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self.failure: Exception | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="toolkit.cache.relay")

    def put(self, message: Message) -> None:
        self._queue.put_nowait(message)

    async def drain(self) -> None:
        """Until the client has taken every message put; raises what its ``send`` raised."""
        await self._queue.join()
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                if self.failure is None:
                    await self._send(message)
            except Exception as exc:  # the client's failure: raised to the app on its next send
                self.failure = exc
            finally:
                self._queue.task_done()
