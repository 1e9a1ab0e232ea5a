"""The stream a model call hands to its caller: it yields the provider's chunks and owns the
end of the call.

It ends the call (span and metrics) when the chunks are exhausted, when producing one fails,
and when it is closed early: ``close()`` / ``aclose()``, leaving its ``with`` / ``async with``,
or dropped by the caller (collected: the span still ends, where other instrumentations leave
it open forever). The span is current while each chunk is produced. Anything else asked of
it (``response``, ``headers``...) is the wrapped stream's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry import context

if TYPE_CHECKING:
    from toolkit.agents.call import LLMCall

logger = logging.getLogger("toolkit.agents")

T = TypeVar("T")


class _Stream(Generic[T]):
    __slots__ = ("_call", "_chunks", "_on_chunk")

    def __init__(self, call: LLMCall, chunks: Any, on_chunk: Callable[[T], object] | None) -> None:
        self._call = call
        self._chunks = chunks
        self._on_chunk = on_chunk

    def _arrived(self, chunk: T) -> None:
        self._call.first_chunk()
        if self._on_chunk is not None:
            try:
                self._on_chunk(chunk)
            except Exception:
                logger.exception("toolkit.agents: on_chunk raised; the stream goes on")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._chunks, name)

    def __del__(self) -> None:
        # Dropped before its end: end the call (the chunks' own finaliser closes them).
        call = getattr(self, "_call", None)
        if call is not None:
            call._finish(None)


def _detach(token: object) -> None:
    if token is not None:
        context.detach(token)  # type: ignore[arg-type]


class SyncStream(_Stream[T], Iterator[T]):
    """The chunks of a sync stream (see the module); ``close()`` ends it early."""

    __slots__ = ("_iterator",)

    def __init__(
        self, call: LLMCall, chunks: Iterable[T], on_chunk: Callable[[T], object] | None
    ) -> None:
        super().__init__(call, chunks, on_chunk)
        self._iterator = iter(chunks)

    def __iter__(self) -> SyncStream[T]:
        return self

    def __next__(self) -> T:
        token = self._call._context()
        try:
            chunk = next(self._iterator)
        except StopIteration:
            _detach(token)
            self._call._finish(None)
            raise
        except BaseException as exc:
            _detach(token)
            self._call._finish(exc)
            raise
        _detach(token)
        self._arrived(chunk)
        return chunk

    def close(self) -> None:
        """Stop early: close the provider's stream, then end the call (not an error)."""
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._call._finish(None)

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self._call._finish(error)
        self.close()


class AsyncStream(_Stream[T], AsyncIterator[T]):
    """The chunks of an async stream (see the module); ``aclose()`` ends it early."""

    __slots__ = ("_iterator",)

    def __init__(
        self, call: LLMCall, chunks: AsyncIterable[T], on_chunk: Callable[[T], object] | None
    ) -> None:
        super().__init__(call, chunks, on_chunk)
        self._iterator = aiter(chunks)

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        token = self._call._context()
        try:
            chunk = await anext(self._iterator)
        except StopAsyncIteration:
            _detach(token)
            self._call._finish(None)
            raise
        except BaseException as exc:
            _detach(token)
            self._call._finish(exc)
            raise
        _detach(token)
        self._arrived(chunk)
        return chunk

    async def aclose(self) -> None:
        """Stop early: close the provider's stream, then end the call (not an error)."""
        try:
            for method in ("aclose", "close"):  # async generators, then SDK streams
                closer = getattr(self._chunks, method, None)
                if closer is not None:
                    result = closer()
                    if hasattr(result, "__await__"):
                        await result
                    break
        finally:
            self._call._finish(None)

    async def close(self) -> None:
        """:meth:`aclose` under the name the SDKs' async streams use
        (``await openai.AsyncStream.close()``), so closing it either way ends the call."""
        await self.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self._call._finish(error)
        await self.aclose()
