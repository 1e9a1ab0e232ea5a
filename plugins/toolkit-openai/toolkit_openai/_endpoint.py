"""Who serves a client's requests: the provider name and the server's address and port,
read once from the client's base URL.

The provider is the OpenTelemetry GenAI conventions' ``gen_ai.provider.name`` of the few
OpenAI-compatible services whose host says who they are (Azure OpenAI, Groq, DeepSeek,
xAI, Mistral, Perplexity, Gemini's OpenAI endpoint); any other host, a local vLLM or Ollama
included, is ``openai``: the API the client speaks. ``instrument(client, provider=...)``
names it otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Host suffix -> gen_ai.provider.name (the conventions' well-known values).
_PROVIDERS: Final = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
)
DEFAULT_PROVIDER: Final = "openai"
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a client's requests go: ``gen_ai.provider.name``, ``server.address``,
    ``server.port``."""

    provider: str
    address: str | None
    port: int | None


def provider_of(host: str) -> str:
    """The provider a host names, else ``openai``."""
    host = host.lower()
    for suffix, provider in _PROVIDERS:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return provider
    return DEFAULT_PROVIDER


def endpoint_of(client: Any, provider: str | None) -> Endpoint:
    """The client's endpoint, from its ``base_url`` (an httpx URL); ``provider`` overrides."""
    url = getattr(client, "base_url", None)
    host = str(getattr(url, "host", "") or "") or None
    scheme = str(getattr(url, "scheme", "") or "")
    port = getattr(url, "port", None) or _DEFAULT_PORTS.get(scheme)
    named = provider or (DEFAULT_PROVIDER if host is None else provider_of(host))
    return Endpoint(named, host, port if isinstance(port, int) else None)
