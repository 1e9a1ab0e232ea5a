"""FlagStore: flags evaluated in process from a snapshot, kept live from the backend.

Sources, lowest precedence first: the declared defaults (and settings), the overrides stored
in the backend, a test's ``override()`` for the current context. Evaluation reads an immutable
snapshot that is swapped whole when the backend changes: no I/O and no lock per request. A
change is published by the backend (Redis pub/sub) and reaches every process at once; a
periodic resync catches anything a broken subscription missed. While the backend cannot be
read, the last known values keep serving, with reason ``stale``.

Over 400 lines, as one class: evaluation, operators' writes and keeping the snapshot live all
read and swap the same state (the stored overrides, the snapshot, staleness). What stands
apart is elsewhere: building a snapshot (``_snapshot.py``), pinning it per request
(``_middleware.py``), test overrides (``_override.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import metrics, trace
from starlette.types import Scope

from toolkit._default import NOT_YET, NotYet
from toolkit._deprecated import renamed_argument, warn_renamed
from toolkit._tasks import raise_if_cancelling, stop_tasks
from toolkit._version import __version__
from toolkit.backends import FlagStorage, MemoryBackend, require
from toolkit.backends._following import start_following
from toolkit.errors import BackendError, ConfigurationError, UnknownFlag
from toolkit.flags._model import (
    ERROR,
    OFF,
    STALE,
    STATIC,
    Evaluation,
    FlagDefinition,
    FlagState,
    Rollout,
    bucket,
)
from toolkit.flags._override import OVERRIDES
from toolkit.flags._registry import REGISTRY, Registry
from toolkit.flags._snapshot import Answer, Snapshot, compile_snapshot, prepare
from toolkit.identity import CallerResolver
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_counts

logger = logging.getLogger("toolkit.flags")

DEFAULT_RESYNC_INTERVAL = 10.0
FLAG_HISTORY_LENGTH: Final = 1000
"""Change records kept in the backend, the newest first."""
FLAGS_CHANNEL: Final = "flags"
"""Where flag changes are announced: the key of the flag that changed."""
UNDECLARED = "__undeclared__"
"""``feature_flag.key`` label of evaluations of flags nobody declared (keys stay bounded)."""
_EVALUATE = "FlagStore.evaluate/variant/is_enabled"  # names their renamed argument


class RequestFlags:
    """What a request pinned (:meth:`FlagStore.pin`): the store that serves it, the snapshot
    it started with and its scope; its caller, found when a rollout first needs it."""

    __slots__ = ("_caller", "scope", "snapshot", "store")

    def __init__(self, store: FlagStore, snapshot: Snapshot, scope: Scope) -> None:
        self.store = store
        self.snapshot = snapshot
        self.scope = scope
        self._caller: str | NotYet | None = NOT_YET

    def caller(self) -> str | None:
        if self._caller is NOT_YET:
            self._caller = self.store.caller_of(self.scope)
        return self._caller


REQUEST: contextvars.ContextVar[RequestFlags | None] = contextvars.ContextVar(
    "toolkit_flags_request", default=None
)
"""The flags of the request being served here (set by ``FlagContextMiddleware``)."""


@dataclass(frozen=True, slots=True)
class FlagView:
    """A flag as an operator sees it: definition, stored override, effective default."""

    definition: FlagDefinition
    state: FlagState | None
    default: str

    def as_dict(self) -> dict[str, Any]:
        d = self.definition
        return {
            "key": d.key,
            "description": d.description,
            "variants": dict(d.variants),
            "default": self.default,
            "capability": d.capability,
            "override": json.loads(self.state.to_json()) if self.state else None,
        }


class FlagStore:
    """Answers flag questions for requests, from memory; writes go to the backend.

    Args:
        backend: where overrides, their history and change notices live; an in-process
            :class:`MemoryBackend` when None (one process, no sharing). ConfigurationError
            when it lacks :class:`~toolkit.backends.FlagStorage`.
        defaults: flag key -> variant served when no override is stored (from settings).
        caller: how a request's caller is found when a rollout needs it (a sync
            :class:`~toolkit.identity.CallerResolver`); the client address when None.
            ``subject=`` is its old name, deprecated.
        resync_interval: seconds between full reloads, the safety net behind pub/sub.
        meter_provider: where evaluation and change counters live; the global one when None.
        registry: the flag declarations (the process-wide registry by default).
        sleep: how the resync waits out its interval (tests pass their own).
    """

    def __init__(
        self,
        backend: FlagStorage | None = None,
        *,
        defaults: Mapping[str, str] | None = None,
        caller: CallerResolver[str] | None = None,
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
        meter_provider: metrics.MeterProvider | None = None,
        registry: Registry = REGISTRY,
        subject: CallerResolver[str] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if backend is None:
            backend = MemoryBackend()
        require(backend, FlagStorage, user="FlagStore")
        self.backend = backend
        self._defaults = dict(defaults or {})
        self._caller = renamed_argument("FlagStore", "subject", subject, "caller", caller)
        self._resync_interval = resync_interval
        self._sleep = sleep
        self._registry = registry
        self._stored: dict[str, FlagState] = {}
        self._snapshot: Snapshot = {}
        self._compiled_version = -1
        self._published_version = -1
        self._tasks: list[asyncio.Task[None]] = []
        self.stale = False
        self.loaded_at: float | None = None
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._evaluations = shared_counts(meter, names.FEATURE_FLAG_EVALUATIONS_METRIC)
        self._changes = shared_counts(meter, names.FEATURE_FLAG_CHANGES_METRIC)
        self._check_defaults()
        self._compile()

    # --- evaluation (the hot path) -------------------------------------------------------

    def evaluate(
        self, key: str, *, caller: str | None = None, subject: str | None = None
    ) -> Evaluation:
        """The variant of flag ``key`` for this request's caller (or ``caller``, an identity
        such as ``"user:42"``), counted and, when it matters, put on the current span as a
        ``feature_flag.evaluation`` event. ``subject=`` is the old name of ``caller=``."""
        if subject is not None:
            caller = renamed_argument(_EVALUATE, "subject", subject, "caller", caller)
        return self._answer(key, caller).evaluation

    def _answer(self, key: str, caller: str | None) -> Answer:
        """The prepared answer for ``key``, counted and traced: every evaluation's one path
        (the kill switches of every middleware ask through here on every request)."""
        if self._compiled_version != self._registry.version:
            self._compile()  # a flag was declared since: serve it too
        overrides = OVERRIDES.get()
        if overrides is not None and key in overrides:
            answer = self._overridden(key, overrides[key])
        else:
            request = REQUEST.get()
            snapshot: Snapshot = (
                request.snapshot
                if request is not None and request.store is self
                else self._snapshot
            )
            resolved = snapshot.get(key)
            if resolved is None:
                answer = prepare(key, OFF, False, ERROR, UNDECLARED)
            elif resolved.inside is None:
                answer = resolved.outside
            else:
                if caller is None and request is not None and request.store is self:
                    caller = request.caller()
                inside = caller is not None and bucket(key, caller) < resolved.threshold
                answer = resolved.inside if inside else resolved.outside
            if self.stale and answer.evaluation.reason != ERROR:
                e = answer.evaluation
                answer = prepare(key, e.variant, e.value, STALE)
        self._evaluations.add(answer.series, answer.attributes)
        if answer.traced:
            self._trace(answer, names.FLAG_PROVIDER)
        return answer

    def report(self, evaluation: Evaluation, *, provider: str) -> None:
        """Count and trace an evaluation another provider made (see ``flags.openfeature``)."""
        definition = self._registry.definitions.get(evaluation.key)
        label = evaluation.key if definition is not None else UNDECLARED
        capability = definition is not None and definition.capability
        e = evaluation
        self._record(
            prepare(e.key, e.variant, e.value, e.reason, label, capability=capability), provider
        )

    def _record(self, answer: Answer, provider: str) -> None:
        self._evaluations.add(answer.series, answer.attributes)
        if answer.traced:
            self._trace(answer, provider)

    def _trace(self, answer: Answer, provider: str) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.FEATURE_FLAG_EVALUATION_EVENT,
                {**answer.attributes, names.FEATURE_FLAG_PROVIDER_NAME: provider},
            )

    def variant(self, key: str, *, caller: str | None = None, subject: str | None = None) -> str:
        if subject is not None:
            caller = renamed_argument(_EVALUATE, "subject", subject, "caller", caller)
        return self._answer(key, caller).evaluation.variant

    def is_enabled(
        self, key: str, *, caller: str | None = None, subject: str | None = None
    ) -> bool:
        """Whether a boolean flag (or a kill switch) is on; ``shadow`` counts as on."""
        if subject is not None:
            caller = renamed_argument(_EVALUATE, "subject", subject, "caller", caller)
        return self._answer(key, caller).evaluation.variant != OFF

    def pin(self, scope: Scope) -> RequestFlags:
        """The flags of the request ``scope``: this store and its snapshot now, which every
        evaluation of the request reads while :data:`REQUEST` holds them, even if a flag
        changes meanwhile (``FlagContextMiddleware`` sets it for each request)."""
        return RequestFlags(self, self._snapshot, scope)

    def caller_of(self, scope: Any) -> str | None:
        """The caller a request's rollouts bucket by (``flags.caller``), as an identity."""
        if self._caller is None:
            client = scope.get("client")
            return f"client:{client[0]}" if client else None
        return self._caller.resolve(scope)

    def subject_of(self, scope: Any) -> str | None:
        """Deprecated: the old name of :meth:`caller_of`."""
        warn_renamed("FlagStore.subject_of", "FlagStore.caller_of")
        return self.caller_of(scope)

    def _overridden(self, key: str, variant: str) -> Answer:
        definition = self._registry.definitions.get(key)
        if definition is None or variant not in definition.variants:
            return prepare(key, OFF, False, ERROR, UNDECLARED)
        return prepare(key, variant, definition.variants[variant], STATIC)

    # --- operators' view and writes --------------------------------------------------------

    def flags(self) -> list[FlagView]:
        """Every declared flag with its stored override, sorted by key."""
        return [
            FlagView(d, self._stored.get(k), self._default_variant(d))
            for k, d in sorted(self._registry.definitions.items())
        ]

    def _default_variant(self, definition: FlagDefinition) -> str:
        """The settings' default when it names a variant of the flag, else the declared one
        (settings may name a flag before the code that declares it is imported)."""
        variant = self._defaults.get(definition.key, definition.default)
        return variant if variant in definition.variants else definition.default

    def definition(self, key: str) -> FlagDefinition:
        definition = self._registry.definitions.get(key)
        if definition is None:
            known = ", ".join(sorted(self._registry.definitions))
            raise UnknownFlag(f"no flag {key!r}; the declared flags are: {known}")
        return definition

    async def set(self, key: str, variant: str, *, by: str) -> None:
        """Serve ``variant`` to everyone (ends any rollout). Raises BackendError."""
        await self._write(key, FlagState(variant), by)

    async def rollout(self, key: str, variant: str, percentage: float, *, by: str) -> None:
        """Serve ``variant`` to ``percentage`` % of callers, sticky by caller; the others
        keep the flag's current variant. Raises BackendError."""
        current = self._stored.get(key)
        base = current.variant if current else self._default_variant(self.definition(key))
        await self._write(key, FlagState(base, Rollout(variant, percentage)), by)

    async def reset(self, key: str, *, by: str) -> None:
        """Remove the override: back to the default. Raises BackendError."""
        self.definition(key)
        await self._write(key, None, by)

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` changes (1 to 1000), newest first. Raises BackendError."""
        if not 1 <= limit <= FLAG_HISTORY_LENGTH:
            raise ConfigurationError(f"history limit is between 1 and {FLAG_HISTORY_LENGTH}")
        return await self.backend.flags_history(limit)

    async def _write(self, key: str, state: FlagState | None, by: str) -> None:
        if state is not None:
            state.check(self.definition(key))
        new = json.loads(state.to_json()) if state else None
        await self.backend.flags_save(
            key,
            state.to_json() if state else None,
            {"key": key, "new": new, "by": by},
            channel=FLAGS_CHANNEL,
            history_length=FLAG_HISTORY_LENGTH,
        )
        # Saved: serve it here at once, even if the reload below fails; the backend's notice
        # takes it to the other processes.
        stored = {k: v for k, v in self._stored.items() if k != key}
        if state is not None:
            stored[key] = state
        self._apply(stored)
        await self.reload()

    # --- keeping the snapshot live -----------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (and :meth:`stop` has not): changes are followed."""
        return bool(self._tasks)

    async def start(self) -> None:
        """Load the overrides (bounded by the backend timeout; the defaults serve, stale, if
        it fails) and start following changes, returning once the subscription is live.
        Never blocks startup longer than one call: when the load failed, the subscription is
        left to come up in the background."""
        await self.reload()
        await self.publish_declarations()
        resync = asyncio.create_task(self._resync(), name="toolkit.flags.resync")
        self._tasks = [resync, await self._follow(wait=not self.stale)]

    async def stop(self) -> None:
        """Stop following changes (bounded: see :func:`toolkit._tasks.stop_tasks`)."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)

    async def reload(self) -> None:
        """Read every override from the backend and swap the snapshot; on failure keep the
        last known values and mark them stale."""
        try:
            raw = await self.backend.flags_load()
        except BackendError:
            self._mark_stale()
            return
        stored: dict[str, FlagState] = {}
        for key, text in raw.items():
            try:
                state = FlagState.from_json(text)
                state.check(self.definition(key))
            except (ValueError, KeyError, TypeError, ConfigurationError) as exc:
                logger.warning("ignoring the stored override of flag %r: %s", key, exc)
                continue
            stored[key] = state
        self._apply(stored)
        if self.stale:
            logger.warning("flags are live again")
        self.stale = False
        self.loaded_at = time.time()

    def _apply(self, stored: dict[str, FlagState]) -> None:
        self._announce_changes(stored)
        self._stored = stored
        self._compile()

    async def _follow(self, *, wait: bool) -> asyncio.Task[None]:
        """Apply changes as they are announced; serve stale values while cut off."""

        async def reload(message: str) -> None:
            if not message:
                # Subscribed (again): the backend may have restarted empty since the last
                # time, so declare this process's flags again before catching up.
                await self.publish_declarations()
            await self.reload()  # any notice means: reload

        return await start_following(
            self.backend,
            FLAGS_CHANNEL,
            reload,
            self._mark_stale,
            name="toolkit.flags.follow",
            wait=wait,
        )

    async def _resync(self) -> None:
        while True:
            await self._sleep(self._resync_interval)
            await self.reload()
            raise_if_cancelling()
            if self._published_version != self._registry.version:
                await self.publish_declarations()

    async def publish_declarations(self) -> None:
        """Record this process's application flags in the backend, so that operators' tools
        (the CLI, another instance's admin page) know them too. Best effort."""
        declared = {
            key: d.to_json() for key, d in self._registry.definitions.items() if not d.capability
        }
        version = self._registry.version
        try:
            await self.backend.flags_declare(declared)
        except BackendError:
            return  # the next resync tries again
        self._published_version = version

    async def load_declarations(self) -> None:
        """Declare here every flag some process recorded in the backend (for the CLI).
        Raises BackendError."""
        for key, text in (await self.backend.flags_declared()).items():
            try:
                self._registry.declare(FlagDefinition.from_json(key, text))
            except (ValueError, KeyError, ConfigurationError) as exc:
                logger.warning("ignoring the recorded declaration of flag %r: %s", key, exc)

    def _mark_stale(self) -> None:
        if not self.stale:
            logger.warning("flags cannot be read from the backend; serving the last known values")
        self.stale = True

    def _announce_changes(self, stored: Mapping[str, FlagState]) -> None:
        for key in sorted(set(stored) | set(self._stored)):
            old, new = self._stored.get(key), stored.get(key)
            if old != new and self.loaded_at is not None:
                logger.info(
                    "flag %s changed: %s -> %s",
                    key,
                    old.to_json() if old else "default",
                    new.to_json() if new else "default",
                )
                attributes = {names.FEATURE_FLAG_KEY: key}
                self._changes.add(key, attributes)

    def _compile(self) -> None:
        registry = self._registry
        self._snapshot = compile_snapshot(registry.definitions, self._stored, self._default_variant)
        self._compiled_version = registry.version

    def _check_defaults(self) -> None:
        for key, variant in self._defaults.items():
            definition = self._registry.definitions.get(key)
            if definition is not None and variant not in definition.variants:
                raise ConfigurationError(
                    f"flag {key!r}: default {variant!r} is not one of {sorted(definition.variants)}"
                )
