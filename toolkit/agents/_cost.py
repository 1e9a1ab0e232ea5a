"""What a model call cost, by the ``agents.prices`` table (USD per million tokens)."""

from __future__ import annotations

from collections.abc import Mapping

from toolkit.settings import ModelPrice


class Prices:
    """The price table; a model it does not name costs nothing known (None), never an error."""

    __slots__ = ("_table",)

    def __init__(self, table: Mapping[str, ModelPrice]) -> None:
        self._table = dict(table)

    def __bool__(self) -> bool:
        return bool(self._table)

    def cost(
        self,
        models: tuple[str | None, str],
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
    ) -> float | None:
        """USD for these tokens of the first model of ``models`` (the one that answered, then
        the one asked for) the table prices; None when it prices neither. Input tokens include
        the cache-read ones (as the conventions count them), priced apart when the table says."""
        price = None
        for model in models:
            if model is not None:
                price = self._table.get(model)
                if price is not None:
                    break
        if price is None:
            return None
        cached = min(max(cache_read_tokens, 0), max(input_tokens, 0))
        fresh = max(input_tokens, 0) - cached
        read_price = price.input if price.cache_read is None else price.cache_read
        total = fresh * price.input + cached * read_price + max(output_tokens, 0) * price.output
        return total / 1_000_000
