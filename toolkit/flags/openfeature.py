"""OpenFeature, both ways (needs the ``openfeature`` extra: ``openfeature-sdk``).

- :class:`ToolkitProvider`: an app already on the OpenFeature SDK reads the toolkit's flags
  through its own client: ``api.set_provider(ToolkitProvider())``.
- :class:`OpenFeatureFlags`: the toolkit takes its flags (kill switches included) from
  whatever provider the app gave OpenFeature (flagd, Unleash, LaunchDarkly...); selected by
  ``TOOLKIT_FLAGS__SOURCE=openfeature``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

from toolkit.flags._context import REQUEST
from toolkit.flags._current import current_store
from toolkit.flags._model import ERROR, OFF, ON, Evaluation
from toolkit.flags._registry import REGISTRY
from toolkit.flags._store import FlagStore
from toolkit.telemetry import names

T = TypeVar("T")


class ToolkitProvider(AbstractProvider):
    """An OpenFeature provider answering from a toolkit :class:`FlagStore`.

    Args:
        store: the store to read; the current one (``install()``'s) when None.
    """

    def __init__(self, store: FlagStore | None = None) -> None:
        super().__init__()
        self._store = store

    def get_metadata(self) -> Metadata:
        return Metadata(name=names.FLAG_PROVIDER)

    def _resolve(
        self, key: str, default: T, context: EvaluationContext | None, kind: type
    ) -> FlagResolutionDetails[T]:
        if key not in REGISTRY.definitions:
            return FlagResolutionDetails(
                default, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}", reason=ERROR.upper()
            )
        store = self._store or current_store()
        evaluation = store.evaluate(key, subject=context.targeting_key if context else None)
        if not isinstance(evaluation.value, kind) or (kind is int and evaluation.value is True):
            return FlagResolutionDetails(
                default,
                ErrorCode.TYPE_MISMATCH,
                f"flag {key!r} is not a {kind.__name__}",
                reason=ERROR.upper(),
            )
        value = cast(T, evaluation.value)
        return FlagResolutionDetails(
            value, reason=evaluation.reason.upper(), variant=evaluation.variant
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, (dict, list))  # type: ignore[arg-type]


class OpenFeatureFlags:
    """The toolkit's flag questions answered by an OpenFeature client.

    A flag whose variants are ``on``/``off`` is asked as a boolean; any other as a string
    naming the variant. The targeting key is the request's subject (``flags.subject``).
    Evaluations are counted and put on spans as for the toolkit's own store.

    Args:
        client: the OpenFeature client to ask; ``openfeature.api.get_client()`` when None.
        store: where evaluations are recorded and subjects found; the current one when None.
    """

    def __init__(
        self, client: OpenFeatureClient | None = None, *, store: FlagStore | None = None
    ) -> None:
        self._client = client or api.get_client()
        self._store = store

    def evaluate(self, key: str, *, subject: str | None = None) -> Evaluation:
        store = self._store or current_store()
        definition = REGISTRY.definitions.get(key)
        if definition is None:
            evaluation = Evaluation(key, OFF, False, ERROR)
            store.report(evaluation, provider=self._provider_name())
            return evaluation
        if subject is None:
            request = REQUEST.get()
            subject = request.subject() if request is not None else None
        context = EvaluationContext(targeting_key=subject) if subject else None
        if set(definition.variants) == {ON, OFF}:
            details: Any = self._client.get_boolean_details(
                key, bool(definition.variants[definition.default]), context
            )
            variant = ON if details.value else OFF
        else:
            details = self._client.get_string_details(key, definition.default, context)
            variant = details.value if details.value in definition.variants else definition.default
        reason = str(details.reason or "unknown").lower()
        if details.error_code is not None:
            reason = ERROR
        evaluation = Evaluation(key, variant, definition.variants[variant], reason)
        store.report(evaluation, provider=self._provider_name())
        return evaluation

    def variant(self, key: str, *, subject: str | None = None) -> str:
        return self.evaluate(key, subject=subject).variant

    def is_enabled(self, key: str, *, subject: str | None = None) -> bool:
        return self.evaluate(key, subject=subject).variant != OFF

    def _provider_name(self) -> str:
        return str(self._client.provider.get_metadata().name)
