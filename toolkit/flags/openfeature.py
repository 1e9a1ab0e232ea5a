"""OpenFeature, both ways (needs the ``openfeature`` extra: ``openfeature-sdk``).

- :class:`ToolkitProvider`: an app already on the OpenFeature SDK reads the toolkit's flags
  through its own client: ``api.set_provider(ToolkitProvider())``.
- :class:`OpenFeatureFlags`: the toolkit takes its flags (kill switches included) from
  whatever provider the app gave OpenFeature (flagd, Unleash, LaunchDarkly...); selected by
  ``TOOLKIT_FLAGS__SOURCE=openfeature``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar, cast

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from toolkit._deprecated import renamed_argument
from toolkit.flags._current import current_store
from toolkit.flags._model import (
    DEFAULT,
    ERROR,
    OFF,
    SPLIT,
    STALE,
    STATIC,
    Evaluation,
    FlagDefinition,
)
from toolkit.flags._override import OVERRIDES
from toolkit.flags._registry import REGISTRY
from toolkit.flags._store import REQUEST, FlagStore
from toolkit.telemetry import names

__all__ = ["OpenFeatureFlags", "ToolkitProvider"]

T = TypeVar("T")


# A toolkit reason as an OpenFeature resolution reason. A declared default is configuration,
# not a fallback: the spec's STATIC ("no dynamic evaluation"); its DEFAULT means the caller's
# default value was served, which the provider never decides.
_REASONS: Final[Mapping[str, str]] = {
    DEFAULT: Reason.STATIC,
    STATIC: Reason.STATIC,
    SPLIT: Reason.SPLIT,
    STALE: Reason.STALE,
    ERROR: Reason.ERROR,
}


class _Kind(NamedTuple):
    """An OpenFeature flag type: its name in messages and the values it accepts."""

    name: str
    accepts: Callable[[Any], bool]


# bool is an int in Python, but a boolean flag is not a number to OpenFeature: the integer
# and float getters refuse it (the SDK's own type check lets it through).
_BOOLEAN = _Kind("boolean", lambda value: isinstance(value, bool))
_STRING = _Kind("string", lambda value: isinstance(value, str))
_INTEGER = _Kind("integer", lambda value: isinstance(value, int) and not isinstance(value, bool))
_FLOAT = _Kind(
    "float", lambda value: isinstance(value, int | float) and not isinstance(value, bool)
)
_OBJECT = _Kind("object", lambda value: isinstance(value, Mapping | list))


class ToolkitProvider(AbstractProvider):
    """An OpenFeature provider answering from a toolkit :class:`FlagStore`.

    Each typed getter answers the variant's value when it has that type, else the caller's
    default with ``TYPE_MISMATCH`` (a boolean is not an integer, an integer is read as a float).
    The declared default and an operator's choice are ``STATIC``, a rollout ``SPLIT``, a store
    that cannot reach its backend ``STALE``; the toolkit's own reason is in the flag metadata
    (``toolkit.reason``). It never raises: an unknown flag is ``FLAG_NOT_FOUND``.

    Args:
        store: the store to read; the current one (``install()``'s) when None.
    """

    def __init__(self, store: FlagStore | None = None) -> None:
        super().__init__()
        self._store = store

    def get_metadata(self) -> Metadata:
        return Metadata(name=names.FLAG_PROVIDER)

    def _resolve(
        self, key: str, default: T, context: EvaluationContext | None, kind: _Kind
    ) -> FlagResolutionDetails[T]:
        if key not in REGISTRY.definitions:
            return FlagResolutionDetails(
                default, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}", reason=Reason.ERROR
            )
        store = self._store or current_store()
        evaluation = store.evaluate(key, caller=context.targeting_key if context else None)
        if not kind.accepts(evaluation.value):
            return FlagResolutionDetails(
                default,
                ErrorCode.TYPE_MISMATCH,
                f"flag {key!r} is not a {kind.name} (its variant {evaluation.variant!r} is "
                f"{evaluation.value!r})",
                reason=Reason.ERROR,
            )
        value = evaluation.value
        if kind is _FLOAT:
            value = float(value)
        return FlagResolutionDetails(
            cast(T, value),
            reason=_REASONS.get(evaluation.reason, Reason.UNKNOWN),
            variant=evaluation.variant,
            flag_metadata={"toolkit.reason": evaluation.reason},
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _BOOLEAN)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _STRING)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _INTEGER)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, _FLOAT)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, _OBJECT)


# The reasons a provider may give, as the OpenTelemetry feature-flag conventions spell them;
# any other string is counted as "unknown", so a provider cannot grow the metric's labels.
_KNOWN_REASONS: Final = frozenset(
    {"static", "default", "targeting_match", "split", "cached", "disabled", "unknown", "stale",
     "error"}
)  # fmt: skip


class _Question(NamedTuple):
    """How one toolkit flag is asked of OpenFeature: the getter matching its values' type and
    the default value to pass, or by variant name when its values mix types."""

    getter: str
    default: Any
    by_name: bool


def _question(definition: FlagDefinition) -> _Question:
    values = list(definition.variants.values())
    for kind, getter in (
        (_BOOLEAN, "get_boolean_details"),
        (_STRING, "get_string_details"),
        (_INTEGER, "get_integer_details"),
        (_FLOAT, "get_float_details"),
        (_OBJECT, "get_object_details"),
    ):
        if all(kind.accepts(value) for value in values):
            return _Question(getter, definition.variants[definition.default], by_name=False)
    return _Question("get_string_details", definition.default, by_name=True)


def _variant_of(definition: FlagDefinition, details: Any, by_name: bool) -> str | None:
    """The toolkit variant a provider's answer names: its ``variant`` when that is one of the
    flag's, else the variant whose value it returned (or whose name, for mixed flags)."""
    variants = definition.variants
    if details.variant in variants and (by_name or variants[details.variant] == details.value):
        return str(details.variant)
    if by_name:
        return details.value if details.value in variants else None
    for name, value in variants.items():
        if value == details.value and type(value) is type(details.value):
            return name
    return None


class OpenFeatureFlags:
    """The toolkit's flag questions answered by an OpenFeature client.

    Each flag is asked with the getter of its values' type (a boolean flag as a boolean, the
    ``ratelimit`` switch as a string, ...; a flag whose values mix types as a string naming the
    variant). The answer's ``variant`` picks the toolkit variant when it names one, else its
    value does; an answer that names no variant of the flag, or carries an error code, serves
    the declared default with reason ``error``. The targeting key is the request's caller
    (``flags.caller``). Evaluations are counted and put on spans as for the toolkit's own
    store. ``subject=`` is the old name of ``caller=``, deprecated.

    Args:
        client: the OpenFeature client to ask; ``openfeature.api.get_client()`` when None.
        store: where evaluations are recorded and callers found; the current one when None.
    """

    def __init__(
        self, client: OpenFeatureClient | None = None, *, store: FlagStore | None = None
    ) -> None:
        self._client = client or api.get_client()
        self._store = store
        self._questions: dict[str, tuple[FlagDefinition, _Question]] = {}

    def evaluate(
        self, key: str, *, caller: str | None = None, subject: str | None = None
    ) -> Evaluation:
        if subject is not None:
            caller = renamed_argument(
                "OpenFeatureFlags.evaluate/variant/is_enabled",
                "subject",
                subject,
                "caller",
                caller,
            )
        store = self._store or current_store()
        overrides = OVERRIDES.get()
        if overrides is not None and key in overrides:
            return store.evaluate(key, caller=caller)  # a test's override is above every source
        definition = REGISTRY.definitions.get(key)
        if definition is None:
            evaluation = Evaluation(key, OFF, False, ERROR)
            store.report(evaluation, provider=self._provider_name())
            return evaluation
        if caller is None:
            request = REQUEST.get()
            caller = request.caller() if request is not None else None
        context = EvaluationContext(targeting_key=caller) if caller else None
        question = self._question(definition)
        details = getattr(self._client, question.getter)(key, question.default, context)
        variant = _variant_of(definition, details, question.by_name)
        reason = str(details.reason or "unknown").lower()
        if reason not in _KNOWN_REASONS:
            reason = "unknown"
        if details.error_code is not None or variant is None:
            variant, reason = definition.default, ERROR
        evaluation = Evaluation(key, variant, definition.variants[variant], reason)
        store.report(evaluation, provider=self._provider_name())
        return evaluation

    def _question(self, definition: FlagDefinition) -> _Question:
        """Decided once per declaration, not per evaluation."""
        known = self._questions.get(definition.key)
        if known is None or known[0] is not definition:
            known = (definition, _question(definition))
            self._questions[definition.key] = known
        return known[1]

    def variant(self, key: str, *, caller: str | None = None, subject: str | None = None) -> str:
        return self.evaluate(key, caller=caller, subject=subject).variant

    def is_enabled(
        self, key: str, *, caller: str | None = None, subject: str | None = None
    ) -> bool:
        return self.evaluate(key, caller=caller, subject=subject).variant != OFF

    def _provider_name(self) -> str:
        return str(self._client.provider.get_metadata().name)
