"""What a function cache entry cost to compute, stored after its value.

An entry whose computation made model calls (see ``toolkit/_savings.py``) ends with a trailer:
the tally (msgpack: ``[[model, calls, input tokens, output tokens], ...]``, a few integers),
its length (2 bytes) and :data:`MAGIC`. Entries without it, all those written before it
existed and those whose computation called no model, are stored and read exactly as before:
they save nothing. JSON and the string forms never contain the byte ``0xfe`` (it is not
UTF-8) and pickle always ends with its STOP opcode, so a value alone never ends with the
magic. A toolkit from before the trailer reads a trailed pickle entry as it is, and a trailed
JSON or msgpack entry as undecodable: a miss, computed again (during a rolling upgrade).
"""

from __future__ import annotations

import struct
from typing import Final

import msgpack  # type: ignore[import-untyped]
from opentelemetry.metrics import Meter

from toolkit._savings import MAX_MODELS, Tally
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_counts
from toolkit.telemetry.labels import BoundedLabels

MAGIC: Final = b"\xfetoolkit.saved\x01"
_LENGTH: Final = struct.Struct(">H")
MAX_TALLY_BYTES: Final = 1024
MAX_SAVED_MODELS: Final = 100
"""Model names the ``toolkit.cache.saved.*`` metrics tell apart (entries name models written
by other processes too); the rest are ``other``."""


def with_saved(raw: bytes, tally: Tally) -> bytes:
    """``raw`` with ``tally`` after it (``raw`` alone for an empty tally)."""
    if not tally:
        return raw
    rows = [[model, *counts] for model, counts in tally.models.items()]
    blob: bytes = msgpack.packb(rows, use_bin_type=True)
    if len(blob) > MAX_TALLY_BYTES:
        return raw
    return raw + blob + _LENGTH.pack(len(blob)) + MAGIC


def without_saved(raw: bytes) -> tuple[bytes, Tally | None]:
    """The value's bytes and the tally stored after them (None when there is none)."""
    if not raw.endswith(MAGIC):
        return raw, None
    end = len(raw) - len(MAGIC) - _LENGTH.size
    if end < 0:
        return raw, None
    (size,) = _LENGTH.unpack_from(raw, end)
    start = end - size
    if start < 0:
        return raw, None
    try:
        rows = msgpack.unpackb(raw[start:end], use_list=True, raw=False)
        models = {
            str(model)[:128]: [int(calls), int(inputs), int(outputs)]
            for model, calls, inputs, outputs in rows[:MAX_MODELS]
        }
    except Exception:
        return raw, None
    return raw[:start], Tally(models)


class SavedCounts:
    """The ``toolkit.cache.saved.calls`` and ``.tokens`` counters of one cache store."""

    __slots__ = ("_calls", "_models", "_tokens")

    def __init__(self, meter: Meter) -> None:
        self._calls = shared_counts(meter, names.CACHE_SAVED_CALLS_METRIC)
        self._tokens = shared_counts(meter, names.CACHE_SAVED_TOKENS_METRIC)
        self._models = BoundedLabels(MAX_SAVED_MODELS)

    def add(self, name: str, tally: Tally | None) -> None:
        """Count what a hit of cache ``name`` spared: the calls and tokens ``tally`` holds."""
        if not tally:
            return
        for model, (calls, input_tokens, output_tokens) in tally.models.items():
            label = self._models(model)
            attributes = {names.CACHE_NAME: name, names.GEN_AI_REQUEST_MODEL: label}
            self._calls.add((name, label), attributes, calls)
            for token_type, tokens in (
                (names.GEN_AI_TOKEN_INPUT, input_tokens),
                (names.GEN_AI_TOKEN_OUTPUT, output_tokens),
            ):
                self._tokens.add(
                    (name, label, token_type),
                    {**attributes, names.GEN_AI_TOKEN_TYPE: token_type},
                    tokens,
                )
