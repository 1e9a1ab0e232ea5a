"""What a model call cost, by the ``agents.prices`` table (USD per million tokens)."""

from __future__ import annotations

from collections.abc import Mapping

from toolkit.settings import ModelPrice


class Price:
    """One model's prices (USD per million tokens)."""

    __slots__ = ("_cache_read", "_input", "_output")

    def __init__(self, price: ModelPrice) -> None:
        self._input = price.input
        self._output = price.output
        self._cache_read = price.input if price.cache_read is None else price.cache_read

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int) -> float:
        """USD for these tokens. Input tokens include the cache-read ones (as the conventions
        count them), priced apart when the table says."""
        cached = min(max(cache_read_tokens, 0), max(input_tokens, 0))
        fresh = max(input_tokens, 0) - cached
        output = max(output_tokens, 0)
        return (fresh * self._input + cached * self._cache_read + output * self._output) / 1e6


class Prices:
    """The price table; a model it does not name costs nothing known (None), never an error."""

    __slots__ = ("_table",)

    def __init__(self, table: Mapping[str, ModelPrice]) -> None:
        self._table = {model: Price(price) for model, price in table.items()}

    def __bool__(self) -> bool:
        return bool(self._table)

    def find(self, models: tuple[str | None, str]) -> Price | None:
        """The prices of the first model of ``models`` (the one that answered, then the one
        asked for) the table names; None when it names neither."""
        for model in models:
            if model is not None:
                price = self._table.get(model)
                if price is not None:
                    return price
        return None
