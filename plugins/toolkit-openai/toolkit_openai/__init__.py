"""agent-server-toolkit for the OpenAI SDK (``OpenAI`` and ``AsyncOpenAI``).

``toolkit_openai.instrument(client)`` records every chat completion, Responses API call and
embedding request of that client through ``toolkit.llm_call`` (spans and GenAI metrics,
streams measured to their end) and, on an ``AsyncOpenAI`` client, sends each through a
breaker per provider and model with the toolkit's retries (the SDK's own switched off) and,
where the app opts in, the per-text embedding cache of ``@cache_embeddings``::

    import openai
    import toolkit_openai

    client = toolkit_openai.instrument(openai.AsyncOpenAI(), embeddings_ttl="30d")

``install(app)`` applies the plugin (entry point ``openai`` of ``toolkit.plugins``); the
clients are the app's to instrument, explicitly (see the README for why). This module
imports nothing of the SDK until one of those names is used: the entry point must load where
``openai`` is absent, and then the plugin does nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolkit.plugins import Plugin
from toolkit_openai._versions import SUPPORTED

if TYPE_CHECKING:
    from toolkit_openai._instrument import instrument, is_instrumented, uninstrument

__all__ = ["SUPPORTED", "instrument", "is_instrumented", "plugin", "uninstrument"]


def _apply(context: Any) -> None:
    from toolkit_openai._instrument import apply

    apply(context)


plugin = Plugin(framework="openai", apply=_apply, versions=SUPPORTED)
"""What the ``toolkit.plugins`` entry point names."""

_LAZY = {
    "instrument": "toolkit_openai._instrument",
    "is_instrumented": "toolkit_openai._instrument",
    "uninstrument": "toolkit_openai._instrument",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
