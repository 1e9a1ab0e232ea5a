"""The ``agents`` section: agent, step and model-call telemetry (``toolkit.agents``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from toolkit.settings._section import Section

MAX_PRICE = 10_000.0
"""USD per million tokens a price may state: well above any model's list price (the dearest
are in the hundreds), low enough to catch a price typed per token instead of per million."""
MAX_MODEL_NAME = 200
"""Characters of a model name in the price table."""
MAX_PRICED_MODELS = 1000


class ModelPrice(Section):
    """What one model costs, in US dollars per million tokens."""

    input: float = Field(
        ge=0,
        le=MAX_PRICE,
        description="USD per million input tokens (those not read from the provider's prompt "
        "cache). 0 to 10000.",
        examples=[2.5],
    )
    output: float = Field(
        ge=0,
        le=MAX_PRICE,
        description="USD per million output tokens. 0 to 10000.",
        examples=[10.0],
    )
    cache_read: float | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="USD per million input tokens read from the provider's prompt cache; at "
        "the input price when unset. 0 to 10000.",
        examples=[1.25],
    )


class AgentSettings(Section):
    """Spans and metrics of agent runs, pipeline steps and model calls."""

    capture_content: bool | None = Field(
        None,
        description="Record prompts and completions on model-call spans (gen_ai.input.messages, "
        "gen_ai.output.messages). Unset: as OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT "
        "says (off when it is unset too); true or false decides over it.",
        examples=["true"],
    )
    content_max_length: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Characters kept of each text of a captured message; the rest is cut. 1 "
        "to 1000000.",
        examples=["2000"],
    )
    content_max_messages: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Messages kept of a captured prompt or completion: the last ones. 1 to 10000.",
        examples=["16"],
    )
    max_label_values: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Distinct models, providers, agents and steps each put on metric labels; "
        "the ones seen after these are labelled 'other' (spans keep every name). 1 to 10000.",
        examples=["50"],
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Model name (as the provider names it in requests or answers) -> its "
        "price; toolkit.gen_ai.cost counts the calls of these models.",
        examples=['{"gpt-4o": {"input": 2.5, "output": 10, "cache_read": 1.25}}'],
    )

    @field_validator("prices")
    @classmethod
    def _names(cls, prices: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        if len(prices) > MAX_PRICED_MODELS:
            raise ValueError(f"{len(prices)} models priced; at most {MAX_PRICED_MODELS}")
        for model in prices:
            if not model.strip() or len(model) > MAX_MODEL_NAME:
                raise ValueError(
                    f"model name {model[:40]!r}: 1 to {MAX_MODEL_NAME} characters, e.g. 'gpt-4o'"
                )
        return prices
