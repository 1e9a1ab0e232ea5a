"""The breaker of a provider's model: ``{provider}:{model}``, bounded in how many there are.

Every client wrapper that keeps a breaker per model (the OpenAI and pydantic-ai plugins, an
app's own) names it here, so one model has one breaker (and one set of
``resilience.breakers."{provider}:{model}"`` settings) whichever wrapper calls it. Model names
reach it from code and configuration, yet a fleet of fine-tuned models, or names built per
request, would otherwise make a breaker each (state, metric series, a backend key): the
first :data:`MAX_MODEL_BREAKERS` names are kept, each later model shares its provider's
``{provider}:other``, and past :data:`MAX_OTHER_BREAKERS` providers those share ``other``.
"""

from __future__ import annotations

import threading
from typing import Final

from toolkit.settings._values import BREAKER_NAME_CHARACTERS

MAX_MODEL_BREAKERS: Final = 256
"""Distinct ``{provider}:{model}`` breakers of one process; later models share
``{provider}:other``."""
MAX_OTHER_BREAKERS: Final = 16
"""Distinct ``{provider}:other`` breakers; past them, ``other``."""
OTHER: Final = "other"
MAX_NAME_LENGTH: Final = 200
"""Characters of a breaker name (it is a metric label and part of a backend key)."""


def _clean(text: str) -> str:
    return "".join(c if c in BREAKER_NAME_CHARACTERS else "_" for c in text[:MAX_NAME_LENGTH])


class ModelBreakerNames:
    """The names handed out so far, bounded: the process has one (:func:`model_breaker_name`)."""

    __slots__ = ("_lock", "_max_models", "_max_others", "_models", "_others")

    def __init__(self, max_models: int, max_others: int) -> None:
        self._max_models = max_models
        self._max_others = max_others
        self._models: set[str] = set()
        self._others: set[str] = set()
        self._lock = threading.Lock()  # clients of several threads (sync SDK clients) ask too

    def __call__(self, provider: str, model: str) -> str:
        name = _clean(f"{provider}:{model}")
        if name in self._models:
            return name
        with self._lock:
            if name in self._models or len(self._models) < self._max_models:
                self._models.add(name)
                return name
            shared = _clean(f"{provider}:{OTHER}")
            if shared in self._others or len(self._others) < self._max_others:
                self._others.add(shared)
                return shared
            return OTHER


_NAMES: Final = ModelBreakerNames(MAX_MODEL_BREAKERS, MAX_OTHER_BREAKERS)


def model_breaker_name(provider: str, model: str) -> str:
    """The breaker name of ``model`` served by ``provider``: ``openai:gpt-4o``, what a breaker
    name cannot hold replaced by ``_``; ``{provider}:other`` past :data:`MAX_MODEL_BREAKERS`
    distinct names in this process (``other`` past :data:`MAX_OTHER_BREAKERS` providers).

        @toolkit.resilient(breaker=model_breaker_name("openai", model), retries=3)
    """
    return _NAMES(provider, model)
