"""A snapshot: every declared flag's answers, prepared once from its definition and its
stored override, so that an evaluation is a dictionary lookup (and, for a rollout, a hash).
The store swaps it whole when anything changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from toolkit.flags._model import DEFAULT, SPLIT, STATIC, Evaluation, FlagDefinition, FlagState
from toolkit.telemetry import names


class Answer(NamedTuple):
    """An evaluation prepared once per snapshot, with its metric series and attributes."""

    evaluation: Evaluation
    series: str
    """The metric series' key: one string, whose hash Python keeps (a tuple's it computes
    on every lookup), for an update per evaluation."""
    attributes: Mapping[str, str]
    traced: bool
    """Whether it makes a span event: a kill switch at its default is the normal state of
    every request, so only an overridden one is news on a span."""


def prepare(
    key: str,
    variant: str,
    value: Any,
    reason: str,
    label: str | None = None,
    *,
    capability: bool = False,
) -> Answer:
    label = label or key
    attributes = {
        names.FEATURE_FLAG_KEY: label,
        names.FEATURE_FLAG_RESULT_VARIANT: variant,
        names.FEATURE_FLAG_RESULT_REASON: reason,
    }
    traced = not (capability and reason == DEFAULT)
    # Lengths first: one key per series, whatever a provider's variant and reason hold.
    series = f"{len(label)}:{len(variant)}:{label}{variant}{reason}"
    return Answer(Evaluation(key, variant, value, reason), series, attributes, traced)


@dataclass(frozen=True, slots=True)
class Resolved:
    """One flag in a snapshot: who gets what."""

    definition: FlagDefinition
    outside: Answer
    inside: Answer | None = None  # the rollout's variant, for callers below threshold
    threshold: int = 0


Snapshot = Mapping[str, Resolved]


def compile_snapshot(
    definitions: Mapping[str, FlagDefinition],
    stored: Mapping[str, FlagState],
    default_variant: Callable[[FlagDefinition], str],
) -> dict[str, Resolved]:
    """The answers of every flag of ``definitions``: its ``stored`` override, else its
    ``default_variant``."""
    snapshot: dict[str, Resolved] = {}
    for key, definition in definitions.items():
        state = stored.get(key)
        if state is None:
            variant = default_variant(definition)
            outside = prepare(
                key,
                variant,
                definition.variants[variant],
                DEFAULT,
                capability=definition.capability,
            )
            snapshot[key] = Resolved(definition, outside)
            continue
        reason = STATIC if state.rollout is None else SPLIT
        outside = prepare(key, state.variant, definition.variants[state.variant], reason)
        if state.rollout is None:
            snapshot[key] = Resolved(definition, outside)
            continue
        rollout = state.rollout
        inside = prepare(key, rollout.variant, definition.variants[rollout.variant], SPLIT)
        threshold = round(rollout.percentage * 100)  # of 10,000 buckets
        snapshot[key] = Resolved(definition, outside, inside, threshold)
    return snapshot
