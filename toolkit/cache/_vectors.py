"""Vectors as the embedding cache stores them: little-endian float32, 4 bytes a dimension."""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import Final

_BIG_ENDIAN: Final = sys.byteorder == "big"


def pack(vector: Sequence[float]) -> bytes:
    """``vector`` as little-endian float32 bytes (4 bytes a dimension)."""
    packed = array.array("f", vector)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def unpack(raw: bytes) -> list[float]:
    """The vector that :func:`pack` stored."""
    vector = array.array("f")
    vector.frombytes(raw)
    if _BIG_ENDIAN:
        vector.byteswap()
    return vector.tolist()


def as_lists(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """The function's own vectors, unchanged when they are lists already (the cache is off)."""
    if isinstance(vectors, list) and all(isinstance(v, list) for v in vectors):
        return vectors
    return [list(vector) for vector in vectors]
