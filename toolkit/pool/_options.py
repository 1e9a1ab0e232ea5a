"""An AgentPool's keyword arguments, parsed and checked once into a frozen :class:`PoolOptions`.

:class:`PoolArguments` is the one list of the arguments (both ``AgentPool.__init__`` overloads
take ``**arguments: Unpack[PoolArguments[T]]``), ``_DEFAULTS`` their defaults (the
``PoolSettings`` ones among them), and :func:`signature` shows them to ``help()`` and
``inspect``. Everything that depends on the mode (``size``, ``discard_on``, ``reset``) is
settled here, so the pool and its lending strategies never ask again.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypedDict, TypeVar

from opentelemetry import metrics, trace

from toolkit._configured import chosen
from toolkit._default import DEFAULT, Default
from toolkit._deprecated import warn_renamed
from toolkit._random import RANDOM
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagSource
from toolkit.settings import PoolMode, PoolSettings
from toolkit.settings._pool import DEFAULT_EXCLUSIVE_POOL_SIZE
from toolkit.settings._section import validate_arguments

T = TypeVar("T")

DEFAULTS: Final = PoolSettings.model_validate({})
"""The defaults of the AgentPool arguments that are :class:`~toolkit.settings.PoolSettings`
fields."""

OLD_NAMES: Final[Mapping[str, tuple[str, Any]]] = {
    "MODE_DEFAULT": ("toolkit.DEFAULT", DEFAULT),
    "DEFAULTS": ("toolkit.settings.PoolSettings()", DEFAULTS),
}
"""What ``toolkit.pool`` and ``toolkit.pool.pool`` exported before, deprecated: ``discard_on``
took a sentinel of its own, and the settings model's defaults were a constant."""

DiscardOn = tuple[type[BaseException], ...] | Callable[[BaseException], bool]

UNBOUNDED: Final = sys.maxsize
"""The permits of a shared pool whose ``size`` is unset: callers are never queued."""
_FLAG_KEY: Final = re.compile(r"[^a-z0-9._-]+")


class PoolArguments(TypedDict, Generic[T], total=False):
    """The keyword arguments of :class:`~toolkit.AgentPool` (documented there)."""

    name: str | None
    mode: PoolMode
    size: int | Default
    max_keys: int
    max_waiting: int
    acquire_timeout: str | float
    create_timeout: str | float
    recycle_after: str | float | None
    max_uses: int | None
    recycle_jitter: float
    wait_threshold: str | float
    check_interval: str | float
    reset: Callable[[T], Any] | None
    health_check: Callable[[T], Any] | None
    discard_on: DiscardOn | Default
    warm: int | Mapping[Hashable, int] | Default
    flags: FlagSource | None
    meter_provider: metrics.MeterProvider | None
    tracer_provider: trace.TracerProvider | None
    clock: Callable[[], float]
    random: Callable[[], float]


_DEFAULTS: Final[Mapping[str, Any]] = {
    "name": None,
    **{field: getattr(DEFAULTS, field) for field in PoolSettings.model_fields},
    "size": DEFAULT,  # by mode: DEFAULT_EXCLUSIVE_POOL_SIZE, or no bound when shared
    "reset": None,
    "health_check": None,
    "discard_on": DEFAULT,
    "warm": DEFAULT,
    "flags": None,
    "meter_provider": None,
    "tracer_provider": None,
    "clock": time.monotonic,
    "random": RANDOM.random,
}


@dataclass(frozen=True, slots=True)
class PoolOptions(Generic[T]):
    """One pool's arguments, checked, with the mode's defaults applied."""

    factory: Callable[..., Any]
    takes_key: bool
    """Whether the factory is called with the key (it has a required positional parameter)."""
    name: str
    flag: str
    """The pool's own switch, ``pool.<name>``, under the global ``pool`` one."""
    settings: PoolSettings
    size: int
    """Permits per key: ``size``, else 8 (exclusive) or no bound (shared)."""
    reset: Callable[[T], Any] | None
    health_check: Callable[[T], Any] | None
    discard_on: Callable[[BaseException], bool]
    warm: Mapping[Hashable, int]
    """Objects to build at start, per key (keys with a count of 0 left out)."""
    flags: FlagSource | None
    meter_provider: metrics.MeterProvider | None
    tracer_provider: trace.TracerProvider | None
    clock: Callable[[], float]
    random: Callable[[], float]


def parse_options(factory: Callable[..., Any], arguments: Mapping[str, Any]) -> PoolOptions[Any]:
    """Check ``AgentPool(factory, **arguments)``. Raises TypeError for an unknown argument (as
    a signature would), ConfigurationError naming the argument for an invalid one."""
    unknown = sorted(arguments.keys() - _DEFAULTS.keys())
    if unknown:
        raise TypeError(f"AgentPool() got an unexpected keyword argument {unknown[0]!r}")
    if not callable(factory):
        raise ConfigurationError(
            f"AgentPool(factory={factory!r}): a function (or class) that builds one "
            "object, e.g. AgentPool(make_agent)"
        )
    given = {**_DEFAULTS, **arguments}
    try:
        settings = validate_arguments(
            PoolSettings,
            chosen(
                "AgentPool",
                PoolSettings,
                {field: given[field] for field in PoolSettings.model_fields},
                stacklevel=5,
            ),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            str(exc).replace("invalid toolkit settings:", "invalid AgentPool arguments:")
        ) from None
    name = given["name"] if given["name"] is not None else getattr(factory, "__name__", "pool")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"AgentPool(name={given['name']!r}): a non-empty string, e.g. name='support-agent'"
        )
    shared = settings.mode == "shared"
    reset, health_check = given["reset"], given["health_check"]
    for hook, value in (("reset", reset), ("health_check", health_check)):
        if value is not None and not callable(value):
            raise ConfigurationError(
                f"AgentPool({hook}={value!r}): a function called with the object"
            )
    if reset is not None and shared:
        raise ConfigurationError(
            "AgentPool(reset=..., mode='shared'): a shared object is in use by other "
            "callers when one gives it back, so it cannot be reset; use mode='exclusive'"
        )
    if settings.size is not None:
        size = settings.size
    else:
        size = UNBOUNDED if shared else DEFAULT_EXCLUSIVE_POOL_SIZE
    takes_key = _takes_key(factory)
    return PoolOptions(
        factory=factory,
        takes_key=takes_key,
        name=name,
        flag="pool." + (_FLAG_KEY.sub("-", name.lower()).strip("-._") or "pool")[:90],
        settings=settings,
        size=size,
        reset=reset,
        health_check=health_check,
        discard_on=_discard_predicate(given["discard_on"], shared),
        warm=_warm_plan(given["warm"], takes_key, settings, size),
        flags=given["flags"],
        meter_provider=given["meter_provider"],
        tracer_provider=given["tracer_provider"],
        clock=given["clock"],
        random=given["random"],
    )


def signature() -> inspect.Signature:
    """``AgentPool.__init__``'s signature as ``help()`` and ``inspect`` should show it: every
    argument of :class:`PoolArguments`, keyword-only, with its default."""
    annotations = PoolArguments.__annotations__
    return inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter(
                "factory", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Callable[..., Any]"
            ),
            *(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=getattr(annotations[name], "__forward_arg__", annotations[name]),
                )
                for name, default in _DEFAULTS.items()
            ),
        ],
        return_annotation="None",
    )


def _takes_key(factory: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in parameters
    )


def _discard_predicate(
    discard_on: DiscardOn | Default, shared: bool
) -> Callable[[BaseException], bool]:
    if discard_on is DEFAULT:
        discard_on = () if shared else (Exception,)
    if isinstance(discard_on, tuple):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in discard_on):
            raise ConfigurationError(
                f"AgentPool(discard_on={discard_on!r}): a tuple of exception classes or a "
                "function of the exception, e.g. discard_on=(httpx.TransportError,)"
            )
        types = discard_on
        return lambda exc: isinstance(exc, types)
    if callable(discard_on):
        return discard_on
    raise ConfigurationError(
        f"AgentPool(discard_on={discard_on!r}): a tuple of exception classes or a function "
        "of the exception, e.g. discard_on=(httpx.TransportError,)"
    )


def _warm_plan(
    warm: int | Mapping[Hashable, int] | Default | None,
    takes_key: bool,
    settings: PoolSettings,
    size: int,
) -> dict[Hashable, int]:
    """``warm`` as ``{key: count}``. The default key (None) is a key like any other, also for
    a factory that takes one."""
    if warm is None:
        warn_renamed("AgentPool(warm=None)", "warm=toolkit.DEFAULT, or leave it out", stacklevel=5)
        warm = DEFAULT
    if warm is DEFAULT:
        return {} if takes_key else {None: 1}
    plan: Mapping[Hashable, int] = {None: warm} if isinstance(warm, int) else warm
    if not isinstance(plan, Mapping) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in plan.values()
    ):
        raise ConfigurationError(
            f"AgentPool(warm={warm!r}): a count for the default key, or {{key: count}}, "
            "e.g. warm=2 or warm={'gpt-4o': 2}"
        )
    too_many = {k: n for k, n in plan.items() if n > size}
    if too_many and settings.mode == "exclusive":
        raise ConfigurationError(
            f"AgentPool(warm={warm!r}): more objects than size={size} for "
            f"{list(too_many)}; at most size per key"
        )
    if len(plan) > settings.max_keys:
        raise ConfigurationError(
            f"AgentPool(warm={warm!r}): {len(plan)} keys, more than max_keys="
            f"{settings.max_keys}; raise max_keys or warm fewer keys"
        )
    return {k: n for k, n in plan.items() if n}
