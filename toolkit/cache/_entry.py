"""How a cached response is stored: status, the raw header list, the body, its timing, and
where the body's messages began.

msgpack, not pickle: an entry is data, and reading one can never run code. Header names and
values stay bytes exactly as the app sent them, in their order (no ``name=value;`` joining
that a colon or semicolon inside a value could break).

A streamed response (server-sent events, a chunked body) is replayed as it was sent: one
``http.response.body`` message per chunk. The sizes of its chunks follow the other fields,
only when there are several: a one-message response is stored exactly as before they were
kept, and an entry written before reads as one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final, NamedTuple

import msgpack  # type: ignore[import-untyped]

NAME: Final = "response"
"""``toolkit.cache.name`` of the response cache, and the namespace of its keys."""
VERSION: Final = 1
"""Format of the stored array; an entry of any other version reads as a miss."""
PASS: Final = 0
"""Status of a marker entry: the origin answered something that may not be stored, by its
nature. Kept beside the response's key, never in its place."""

Headers = tuple[tuple[bytes, bytes], ...]


class Entry(NamedTuple):
    """A stored response.

    Attributes:
        status: the HTTP status, or :data:`PASS` for a marker.
        headers: the response's header list, as the app sent it.
        body: every body byte, concatenated.
        stored_at: wall-clock seconds (``time.time()``) when stored: shared by processes.
        ttl: seconds it is fresh.
        stale: seconds after ``ttl`` during which it may be served while it is refreshed.
        sizes: the byte count of each body message the app sent, when it sent several;
            empty for one.
    """

    status: int
    headers: Headers
    body: bytes
    stored_at: float
    ttl: float
    stale: float
    sizes: tuple[int, ...] = ()

    @property
    def is_pass(self) -> bool:
        return self.status == PASS

    def chunks(self) -> list[bytes]:
        """The body, cut as the app sent it."""
        if not self.sizes:
            return [self.body]
        chunks, at = [], 0
        for size in self.sizes:
            chunks.append(self.body[at : at + size])
            at += size
        return chunks


def encode(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    stored_at: float,
    ttl: float,
    stale: float,
    sizes: Sequence[int] = (),
) -> bytes:
    """The stored form of a response; ``sizes``, those of its body messages."""
    fields: tuple[object, ...] = (VERSION, status, headers, body, stored_at, ttl, stale)
    if len(sizes) > 1:
        fields = (*fields, tuple(sizes))
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def encode_pass(stored_at: float, ttl: float) -> bytes:
    """The stored form of a marker: a response could not be stored, noted for ``ttl``. Each
    marker differs from every other (a random body), so that callers can tell a new one."""
    return encode(PASS, (), os.urandom(8), stored_at, ttl, 0.0)


def decode(raw: bytes) -> Entry:
    """The entry stored as ``raw``.

    Raises:
        ValueError: ``raw`` is not an entry of this version (written by another version, or
            not by this cache at all).
    """
    try:
        fields = msgpack.unpackb(raw, use_list=False, raw=False)
    except Exception as exc:  # msgpack raises several types for malformed input
        raise ValueError(f"not a cache entry: {exc}") from exc
    if (
        type(fields) is not tuple
        or len(fields) not in (7, 8)
        or fields[0] != VERSION
        or type(fields[1]) is not int
        or type(fields[2]) is not tuple
        or type(fields[3]) is not bytes
    ):
        raise ValueError("not a cache entry of this version")
    if len(fields) == 8:
        sizes = fields[7]
        if (
            type(sizes) is not tuple
            or not all(type(size) is int and size >= 0 for size in sizes)
            or sum(sizes) != len(fields[3])
        ):
            raise ValueError("not a cache entry of this version: its chunk sizes do not add up")
    return Entry(*fields[1:])


def readable(raw: bytes) -> Entry | None:
    """The entry stored as ``raw``, or None when it is not one this version can read (a
    miss)."""
    try:
        return decode(raw)
    except ValueError:
        return None
