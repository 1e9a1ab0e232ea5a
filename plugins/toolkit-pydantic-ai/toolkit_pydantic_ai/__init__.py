"""agent-server-toolkit for pydantic-ai.

``install(app)`` applies this plugin (entry point ``pydantic-ai`` of ``toolkit.plugins``):
every agent that has not chosen its own instrumentation is traced through pydantic-ai's
instrumentation on the app's providers, so its ``invoke_agent`` / ``chat`` /
``execute_tool`` spans nest under the request's span. :class:`ToolkitModel` wraps a model
with the toolkit's breaker, retries, deadline and, where the app opts in, a per-caller
cache of deterministic requests.

    from pydantic_ai import Agent
    from toolkit_pydantic_ai import ToolkitModel

    agent = Agent(ToolkitModel("openai:gpt-4o", cache_ttl="10m"), name="support")

This module imports nothing of pydantic-ai until one of those names is used: the entry
point must load where pydantic-ai is absent, and then the plugin does nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolkit.plugins import Plugin
from toolkit_pydantic_ai._versions import SUPPORTED

if TYPE_CHECKING:
    from toolkit_pydantic_ai._errors import model_errors
    from toolkit_pydantic_ai._instrument import instrumentation
    from toolkit_pydantic_ai._model import ToolkitModel

__all__ = ["SUPPORTED", "ToolkitModel", "instrumentation", "model_errors", "plugin"]


def _apply(context: Any) -> None:
    from toolkit_pydantic_ai._instrument import apply

    apply(context)


plugin = Plugin(framework="pydantic_ai", apply=_apply, versions=SUPPORTED)
"""What the ``toolkit.plugins`` entry point names."""

_LAZY = {
    "ToolkitModel": "toolkit_pydantic_ai._model",
    "instrumentation": "toolkit_pydantic_ai._instrument",
    "model_errors": "toolkit_pydantic_ai._errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
