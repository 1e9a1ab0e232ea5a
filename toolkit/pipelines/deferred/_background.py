"""``toolkit.defer`` and ``@toolkit.background``: hand work to the current runner, and the
registry of background functions by name.

Every ``@background`` function registers here when decorated (import time), under its
``name=`` or ``module:qualname``, so that a runner in another process (the durable mode)
finds it again by the name a task record carries (:func:`lookup`). ``toolkit.defer(fn)`` of
an undecorated function runs it under ``module:qualname`` without registering it: only the
in-process runner can run it.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, Generic, ParamSpec, TypeVar, overload

from opentelemetry import trace

from toolkit._current import Current
from toolkit._default import DEFAULT, Default
from toolkit.errors import ConfigurationError
from toolkit.flags import PIPELINES_DEFER, FlagSource, current_flags
from toolkit.pipelines.deferred._task import (
    TaskHandle,
    TaskRecord,
    TaskRunner,
    TaskSpec,
    retry_policy,
    task_name,
)
from toolkit.resilience.retry import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")

MAX_RETRIES: Final = 100


def _in_process_runner() -> TaskRunner:
    from toolkit.pipelines.deferred._in_process import InProcessRunner
    from toolkit.settings import DeferSettings

    # No journal: nothing drains this runner, so every exit would read as a crash.
    return InProcessRunner(DeferSettings.model_validate({"journal": None}))


_RUNNER: Final[Current[TaskRunner]] = Current(_in_process_runner)
_REGISTRY: Final[dict[str, TaskSpec]] = {}
# toolkit.defer(fn) of an undecorated function: its spec made once per function (about 15 µs
# of inspection), kept while the function lives.
_SPECS: Final[weakref.WeakKeyDictionary[Callable[..., Any], TaskSpec]] = weakref.WeakKeyDictionary()


def current_runner() -> TaskRunner:
    """The runner ``install()`` set, else an in-process one with the default settings and no
    crash journal, made on first use (nothing drains it at exit: only ``install()``'s
    lifespan does)."""
    return _RUNNER.get()


def set_current_runner(runner: TaskRunner | None) -> None:
    """Make ``runner`` the current one (``install()`` does); None: a default on next use."""
    _RUNNER.set(runner)


def lookup(name: str) -> TaskSpec:
    """The ``@background`` function registered under ``name``.

    Raises:
        LookupError: none is (its module was not imported in this process).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LookupError(
            f"no @toolkit.background function is registered as {name!r}; import the module "
            "that defines it before tasks run"
        ) from None


def _register(spec: TaskSpec) -> None:
    known = _REGISTRY.get(spec.name)
    if known is not None and task_name(known.function) != task_name(spec.function):
        raise ConfigurationError(
            f"@background(name={spec.name!r}): the name is taken by "
            f"{task_name(known.function)}; give each background function its own name"
        )
    _REGISTRY[spec.name] = spec  # the same function defined again (a reload) replaces it


def _new_id() -> str:
    return os.urandom(8).hex()


async def _hand_off(
    spec: TaskSpec, args: tuple[Any, ...], kwargs: dict[str, Any], flags: FlagSource | None
) -> TaskHandle:
    if not (flags or current_flags()).is_enabled(PIPELINES_DEFER):
        await spec.call(*args, **kwargs)  # as the code ran without the toolkit: now, raising
        return TaskHandle(_new_id(), spec.name, inline=True)
    context = trace.get_current_span().get_span_context()
    record = TaskRecord(
        _new_id(), spec, args, kwargs, context if context.is_valid else None, time.time()
    )
    await _RUNNER.get().submit(record)
    return TaskHandle(record.id, spec.name)


class Background(Generic[P, R]):
    """A function that ``@toolkit.background`` registered: ``await fn.defer(...)`` hands it
    to the runner; calling it, ``fn(...)``, still runs it now, as written (no queue, no
    retries, no span of its own)."""

    __slots__ = ("__dict__", "__wrapped__", "_flags", "spec")

    def __init__(self, function: Callable[P, R], spec: TaskSpec, flags: FlagSource | None) -> None:
        self.__wrapped__ = function
        self.spec = spec
        self._flags = flags
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(function, attribute):
                self.__dict__[attribute] = getattr(function, attribute)

    @property
    def name(self) -> str:
        """The registered name, on the task's span and metrics."""
        return self.spec.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    async def defer(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
        """Hand the call to the runner; returns once it accepted it.

        Raises:
            DeferRefused: the queue stayed full (``defer.handoff_timeout``, or the
                deadline), or the app is shutting down.
        """
        return await _hand_off(self.spec, args, kwargs, self._flags)

    def __repr__(self) -> str:
        return f"<background {self.spec.name}>"


def _checked_retries(retries: int | RetryPolicy | Default) -> RetryPolicy | Default:
    if retries is DEFAULT or isinstance(retries, RetryPolicy):
        return retries
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ConfigurationError(
            f"@background(retries={retries!r}): 0 to {MAX_RETRIES} retries or a RetryPolicy, "
            "e.g. retries=3"
        )
    return retry_policy(retries)


@overload
def background(function: Callable[P, R], /) -> Background[P, R]: ...


@overload
def background(
    *,
    retries: int | RetryPolicy | Default = DEFAULT,
    name: str | None = None,
    flags: FlagSource | None = None,
) -> Callable[[Callable[P, R]], Background[P, R]]: ...


def background(
    function: Callable[P, R] | None = None,
    /,
    *,
    retries: int | RetryPolicy | Default = DEFAULT,
    name: str | None = None,
    flags: FlagSource | None = None,
) -> Background[P, R] | Callable[[Callable[P, R]], Background[P, R]]:
    """Register a function as background work: ``await fn.defer(...)`` runs it after the
    hand-off, in a fresh context, its span linked to the caller's.

    Args:
        retries: retries of a failure (any exception), with the retry policy's backoff, or a
            :class:`~toolkit.RetryPolicy` saying which errors and how; ``DEFAULT``: the
            ``defer.retries`` setting.
        name: the task's name on spans, metrics and in the durable mode's queue;
            ``module:qualname`` when None. Unique per process.
        flags: where the ``pipelines.defer`` flag is read at each hand-off; the current flags
            when None. Off, ``defer()`` awaits the function inline and raises what it raises.

    Raises:
        ConfigurationError: a bad ``retries``, or ``name`` taken by another function.
    """
    policy = _checked_retries(retries)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError(f"@background(name={name!r}): a name, e.g. 'memory.extract'")

    def decorate(fn: Callable[P, R]) -> Background[P, R]:
        if not callable(fn):
            raise ConfigurationError(f"@background on {fn!r}: decorate a function")
        spec = TaskSpec(name or task_name(fn), fn, policy)
        _register(spec)
        return Background(fn, spec, flags)

    return decorate if function is None else decorate(function)


async def defer(function: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
    """Run ``function(*args, **kwargs)`` after the hand-off, in a fresh context (no deadline
    of the caller's), its span linked to the caller's; returns once the runner accepted it.
    ``function`` is a coroutine function or a plain one (run in a worker thread); a
    ``@background`` function keeps its name and retries, any other is named
    ``module:qualname`` and retried ``defer.retries`` times. The ``pipelines.defer`` flag, off,
    awaits it inline instead.

    Raises:
        DeferRefused: the queue stayed full (``defer.handoff_timeout``, or the deadline), or
            the app is shutting down.
    """
    if isinstance(function, Background):
        return await _hand_off(function.spec, args, kwargs, function._flags)
    return await _hand_off(_spec_of(function), args, kwargs, None)


def _spec_of(function: Callable[..., Any]) -> TaskSpec:
    try:
        spec = _SPECS.get(function)
    except TypeError:  # not weakly referenceable (a builtin): made each time
        return TaskSpec(task_name(function), function)
    if spec is None:
        spec = _SPECS[function] = TaskSpec(task_name(function), function)
    return spec
