"""The app side of the harness: which phase runs, the status page's token, the call counts.

An example's app reads these; the demo's ``Server`` sets the variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

MODE_VARIABLE = "EXAMPLE_MODE"  # "before" (no toolkit) or "after"
STATUS_TOKEN_VARIABLE = "EXAMPLE_STATUS_TOKEN"
CALLS_PATH = "/_demo/calls"


def after_mode() -> bool:
    """Whether this process runs the example's "after" phase (``EXAMPLE_MODE=after``)."""
    return os.environ.get(MODE_VARIABLE, "before").strip().lower() == "after"


def status_settings() -> dict[str, Any]:
    """``ToolkitSettings`` keywords giving the status page a read-only token named ``demo``,
    when the demo passed one (``EXAMPLE_STATUS_TOKEN``); none otherwise."""
    token = os.environ.get(STATUS_TOKEN_VARIABLE, "")
    return {"admin": {"read_tokens": {"demo": token}}} if len(token) >= 16 else {}


class Counted(Protocol):
    calls: int


def mount_call_counts(app: Any, counted: Mapping[str, Counted]) -> None:
    """``GET /_demo/calls``: ``{name: calls}`` of the scripted providers, the demo's view of
    what each phase cost them (a real provider's bill), and ``{name}.texts`` for an embedder
    (the texts it embedded). Not part of the example's API."""

    async def calls() -> dict[str, int]:
        out = {name: provider.calls for name, provider in counted.items()}
        for name, provider in counted.items():
            texts = getattr(provider, "texts", None)
            if isinstance(texts, int):
                out[f"{name}.texts"] = texts
        return out

    app.add_api_route(CALLS_PATH, calls, methods=["GET"], include_in_schema=False)
