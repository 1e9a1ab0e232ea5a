"""What a function cache entry cost to compute, stored after its value (and, at the end, what
an embedding's share of its batch cost, stored beside it).

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
from collections.abc import Sequence
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


# --- embeddings: each text's share, in a key of its own ---------------------------------------
# An embedding entry is the vector's raw float32 bytes, read by any toolkit that finds a length
# divisible by 4: a trailer would be read as more dimensions by one from before it. So each
# text's share of what its batch cost is stored beside it, under a key of its own (rows of
# ``[model, input tokens, output tokens]``), which readers from before it never ask for. A
# request served wholly from the cache saves one call per model and its texts' tokens; one
# served in part, the tokens of its hits. Vectors stored without a share (by an older toolkit,
# or a function that records no model call) save nothing.


def shares(tally: Tally, texts: Sequence[str]) -> list[bytes | None]:
    """What each text of one batch cost: the batch's tokens split by the texts' lengths
    (integers that add up to the batch's), per model; None for every text when nothing was
    recorded."""
    if not tally or not texts:
        return [None] * len(texts)
    weights = [max(len(text), 1) for text in texts]
    per_model = [
        (model, _split(inputs, weights), _split(outputs, weights))
        for model, (_, inputs, outputs) in tally.models.items()
    ]
    rows_of = [
        [[model, inputs[i], outputs[i]] for model, inputs, outputs in per_model]
        for i in range(len(texts))
    ]
    return [msgpack.packb(rows, use_bin_type=True) for rows in rows_of]


def _split(total: int, weights: list[int]) -> list[int]:
    """``total`` in integer parts proportional to ``weights`` (largest remainders first)."""
    whole = sum(weights)
    parts = [total * w // whole for w in weights]
    left = total - sum(parts)
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in by_remainder[:left]:
        parts[i] += 1
    return parts


def add_share(tally: Tally, raw: bytes | None) -> None:
    """Add one text's stored share (from :func:`shares`) to ``tally``, with no calls: a text
    served from the cache spares a call only when its whole request is."""
    if raw is None or len(raw) > MAX_TALLY_BYTES:
        return
    try:
        rows = msgpack.unpackb(raw, use_list=True, raw=False)
        for model, inputs, outputs in rows[:MAX_MODELS]:
            tally.add(str(model)[:128], 0, max(int(inputs), 0), max(int(outputs), 0))
    except Exception:
        return  # not a share (written by something else): it saves nothing
