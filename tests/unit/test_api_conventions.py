"""Every public callable follows the API conventions of docs/api.md; the old spellings warn.

The walk covers every name in the ``__all__`` of every public module of ``toolkit``. Each
check lists the offending names, so a new callable that breaks a convention fails here with
its name and the rule.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette

import toolkit
import toolkit.settings
from toolkit import DEFAULT
from toolkit.flags import CAPABILITIES, FlagStore, override
from toolkit.flags.openfeature import OpenFeatureFlags
from toolkit.ratelimit.slowapi import SlowAPIMiddleware

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"

STORAGE_TYPES = re.compile(r"\b(Backend|BackendCore|CacheBackend|LimitsSupport|\w+Storage)\b")
"""An annotation naming one of these takes a backend: the argument is ``backend``."""
NAMED_FOR_TYPE = {"CacheStore": "cache", "FlagSource": "flags", "FlagStore": "store"}
"""The other shared objects: a parameter annotated with the type carries the name."""

LITERAL_OPTIONS = {
    "algorithm": "Algorithm",
    "failure": "FailureMode",
    "headers": "HeaderStyle",
    "header": "ProxyHeader",
    "proxy_header": "ProxyHeader",
    "mode": "PoolMode",
    "serializer": "SerializerName",
    "on_error": "OnError",
}
"""Options whose values are a closed set: typed by the Literal alias, never bare ``str``."""

KILL_SWITCHES: dict[str, list[Callable[..., Any]]] = {
    "ratelimit": [toolkit.RateLimitMiddleware, SlowAPIMiddleware],
    "cache.response": [toolkit.ResponseCacheMiddleware],
    "cache.function": [toolkit.cached],
    "cache.embeddings": [toolkit.cache_embeddings],
    "pool": [toolkit.AgentPool],
    "resilience": [toolkit.resilient],
    "tracing": [toolkit.TelemetryMiddleware],
    "tracing.agents": [toolkit.traced_agent, toolkit.step, toolkit.llm_call],
    "tracing.loop": [toolkit.LoopMonitor],
    "pipelines.gather": [toolkit.gather],
    "pipelines.deadline": [toolkit.DeadlineMiddleware],
    "pipelines.defer": [toolkit.background],
    "pipelines.offload": [toolkit.offload],  # run_sync: its keywords are its function's
}
"""Each capability flag -> the entry points that read it: each takes ``flags=``."""

CONFIGURED_WITHOUT_SETTINGS = {"SlowAPIMiddleware": toolkit.settings.RateLimitSettings}
"""Callables whose options are a settings section's fields without a ``settings=`` argument."""

POSITIONAL_OPTIONS = {("series", "suffix"): "part of the name it builds: series(X, '_bucket')"}
"""Options allowed by position past the first parameter, with the reason."""

DEPRECATED_ARGUMENTS: dict[tuple[str, str], str] = {
    ("RateLimitMiddleware", "key"): "caller",
    ("RateLimitMiddleware", "storage"): "backend",
    ("ResponseCacheMiddleware", "identity"): "caller",
    ("ResponseCacheMiddleware", "store"): "cache",
    ("ResponseCacheMiddleware", "storage"): "backend",
    ("SlowAPIMiddleware", "storage"): "backend",
    ("FlagStore", "subject"): "caller",
    ("Policy", "key"): "caller",
    ("evaluate", "subject"): "caller",
    ("is_enabled", "subject"): "caller",
    ("variant", "subject"): "caller",
}
"""(callable, old argument) -> its new name; every one is listed in docs/api.md."""


def public_modules() -> Iterator[Any]:
    yield toolkit
    for info in pkgutil.walk_packages(toolkit.__path__, "toolkit."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            module = importlib.import_module(info.name)
            if hasattr(module, "__all__"):
                yield module


def public_callables() -> dict[str, Any]:
    """``module.name`` -> every class and function some ``__all__`` exports, each once."""
    found: dict[str, Any] = {}
    seen: set[int] = set()
    for module in public_modules():
        for name in module.__all__:
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isfunction(value)) and id(value) not in seen:
                seen.add(id(value))
                found[f"{module.__name__}.{name}"] = value
    return found


CALLABLES = public_callables()


def is_value_type(cls: type) -> bool:
    """Values take their fields by position and need no options: dataclasses, tuples,
    exceptions, enums, classes with their own equality; and the settings models, whose fields
    (None included) are described and checked field by field in tests/unit/test_settings.py."""
    return (
        dataclasses.is_dataclass(cls)
        or issubclass(cls, tuple | BaseException | enum.Enum | BaseModel)
        or "__eq__" in vars(cls)
    )


def is_protocol(value: Any) -> bool:
    return inspect.isclass(value) and bool(getattr(value, "_is_protocol", False))


def parameters(value: Any) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # a builtin base's constructor
        return []
    return list(signature.parameters.values())


def signatures() -> Iterator[tuple[str, Any, list[inspect.Parameter]]]:
    """(name, callable, parameters) of every public callable whose signature is its own."""
    for name, value in CALLABLES.items():
        if is_protocol(value):
            continue
        yield name, value, parameters(value)


def docstring(value: Any) -> str:
    """A function's docstring; a class's own and its ``__init__``'s, with those of the
    toolkit classes it builds on (whose arguments it inherits)."""
    if not inspect.isclass(value):
        return value.__doc__ or ""
    texts = []
    for cls in value.__mro__:
        if cls is value or cls.__module__.startswith("toolkit."):
            init = vars(cls).get("__init__")
            texts += [vars(cls).get("__doc__") or "", getattr(init, "__doc__", None) or ""]
    return "\n".join(texts)


def short(name: str) -> str:
    return name.rsplit(".", 1)[1]


def deprecated(name: str, parameter: str) -> bool:
    return (short(name), parameter) in DEPRECATED_ARGUMENTS


def annotation(parameter: inspect.Parameter) -> str:
    value = parameter.annotation
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def test_every_public_callable_has_a_docstring() -> None:
    missing = [name for name, value in CALLABLES.items() if not (value.__doc__ or "").strip()]
    assert not missing, f"no docstring: {missing}"


def test_the_argument_that_takes_a_backend_is_backend_everywhere() -> None:
    """One name for the storage (``backend=``), and one per shared object (``cache=``,
    ``flags=``, ``store=``), whatever the class. A function's first parameter is its subject,
    named in its own terms (``set_current_cache(store)``)."""
    wrong = []
    for name, value, params in signatures():
        for i, p in enumerate(params):
            if deprecated(name, p.name) or (i == 0 and inspect.isfunction(value)):
                continue
            text = annotation(p)
            if STORAGE_TYPES.search(text) and p.name != "backend":
                wrong.append(f"{name}({p.name}: {text}): call it backend")
            for type_name, argument in NAMED_FOR_TYPE.items():
                if re.search(rf"\b{type_name}\b", text) and p.name != argument:
                    wrong.append(f"{name}({p.name}: {text}): call it {argument}")
            if p.name in ("storage", "store") and not re.search(r"\bFlagStore\b", text):
                wrong.append(f"{name}({p.name}=): the storage is backend=, a cache store cache=")
    assert not wrong, "\n".join(wrong)


def test_options_are_keyword_only() -> None:
    """Past a callable's first parameter (its subject; after the app, for a middleware),
    nothing with a default is taken by position."""
    wrong = []
    for name, value, params in signatures():
        if inspect.isclass(value) and is_value_type(value):
            continue
        positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        if positional and positional[0].name == "app":
            positional = positional[1:]
        wrong += [
            f"{name}({p.name}=...)"
            for p in positional[1:]
            if p.default is not p.empty and (short(name), p.name) not in POSITIONAL_OPTIONS
        ]
    assert not wrong, f"options taken by position: {wrong}"


def test_defaults_are_values_none_or_the_one_sentinel() -> None:
    """No sentinel of its own: a default is a real value, None, or ``toolkit.DEFAULT``."""
    wrong = [
        f"{name}({p.name}={p.default!r})"
        for name, _, params in signatures()
        for p in params
        if p.default is not p.empty
        and p.default is not DEFAULT
        and repr(p.default) != "<factory>"  # a dataclass or pydantic field's default_factory
        and (type(p.default) is object or type(p.default).__name__.startswith("_"))
    ]
    assert not wrong, f"a sentinel other than toolkit.DEFAULT: {wrong}"


def settings_section(name: str, params: list[inspect.Parameter]) -> type[Any] | None:
    if short(name) in CONFIGURED_WITHOUT_SETTINGS:
        return CONFIGURED_WITHOUT_SETTINGS[short(name)]
    for p in params:
        if p.name == "settings":
            found = re.search(r"\b(\w+Settings)\b", annotation(p))
            if found and found.group(1) != "ToolkitSettings":
                section: type[Any] = getattr(toolkit.settings, found.group(1))
                return section
    return None


def test_options_that_are_settings_default_to_DEFAULT() -> None:
    """None never means "the setting": an option that is a field of the settings the
    callable takes defaults to ``DEFAULT``."""
    wrong = []
    for name, _, params in signatures():
        section = settings_section(name, params)
        if section is None:
            continue
        wrong += [
            f"{name}({p.name}={p.default!r})"
            for p in params
            if p.name in section.model_fields and p.default is not DEFAULT
        ]
    assert not wrong, f"settings fields not defaulting to DEFAULT: {wrong}"


def test_what_none_means_is_documented() -> None:
    """A parameter defaulting to None says in the docstring what None means."""
    wrong = []
    for name, value, params in signatures():
        text = docstring(value)
        if inspect.isclass(value) and is_value_type(value):
            continue
        wrong += [
            f"{name}({p.name}=None)"
            for p in params
            if p.default is None
            and not deprecated(name, p.name)
            and not re.search(rf"\b{p.name}\b", text)
        ]
    assert not wrong, f"None with no documented meaning: {wrong}"


def test_closed_sets_of_values_are_typed_by_their_literal() -> None:
    wrong = []
    for name, _, params in signatures():
        for p in params:
            if p.name not in LITERAL_OPTIONS:
                continue
            members = {part.strip() for part in annotation(p).split("|")}
            if "str" in members:
                wrong.append(f"{name}({p.name}: {annotation(p)}): use {LITERAL_OPTIONS[p.name]}")
    assert not wrong, "\n".join(wrong)


def test_the_literal_aliases_named_here_exist() -> None:
    """The aliases the conventions point at are importable as their annotations name them."""
    modules = [toolkit.settings, toolkit.identity, toolkit.cache.functions]
    missing = [
        alias
        for alias in set(LITERAL_OPTIONS.values())
        if not any(hasattr(m, alias) for m in modules)
    ]
    assert not missing, missing


def test_every_entry_point_that_reads_a_kill_switch_takes_flags() -> None:
    assert set(KILL_SWITCHES) == {definition.key for definition in CAPABILITIES}, (
        "a capability flag without its entry points listed in KILL_SWITCHES"
    )
    wrong = [
        f"{flag}: {getattr(entry, '__qualname__', entry)}"
        for flag, entries in KILL_SWITCHES.items()
        for entry in entries
        if "flags" not in inspect.signature(entry).parameters
        or inspect.signature(entry).parameters["flags"].kind is not inspect.Parameter.KEYWORD_ONLY
    ]
    assert not wrong, f"no keyword flags=: {wrong}"


def test_every_deprecated_argument_is_still_a_parameter_and_listed_in_the_docs() -> None:
    page = API_PAGE.read_text()
    by_name = {short(name): value for name, value in CALLABLES.items()}
    wrong = []
    for (where, old), new in DEPRECATED_ARGUMENTS.items():
        params = inspect.signature(by_name[where]).parameters
        if old not in params or new not in params:
            wrong.append(f"{where}({old}=) -> {new}=: not both parameters")
        if not re.search(rf"`{where}`[^\n]*`{old}=`[^\n]*`{new}=`", page):
            wrong.append(f"{where}({old}=) -> {new}=: not in the table of docs/api.md")
    assert not wrong, "\n".join(wrong)


# --- the old spellings keep working, with a warning naming the new one ------------------------


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


@pytest.mark.parametrize(
    ("build", "old", "new"),
    [
        (lambda: toolkit.RateLimitMiddleware(_ok, storage="memory://"), "storage=", "backend="),
        (lambda: toolkit.ResponseCacheMiddleware(_ok, storage="memory://"), "storage=", "backend="),
        (lambda: SlowAPIMiddleware(_ok, storage="memory://"), "storage=", "backend="),
        (
            lambda: toolkit.ResponseCacheMiddleware(_ok, store=toolkit.cache.current_cache()),
            "store=",
            "cache=",
        ),
    ],
)
def test_a_renamed_argument_warns_naming_the_new_one(
    build: Callable[[], Any], old: str, new: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old}.* use {new}"):
        build()


def test_the_old_argument_names_mean_what_the_new_ones_do() -> None:
    backend = toolkit.backends.MemoryBackend()
    with pytest.warns(DeprecationWarning, match="storage="):
        limiter = toolkit.RateLimitMiddleware(_ok, storage=backend, limit="1/minute")
    assert limiter._algorithm._backend is backend  # type: ignore[attr-defined]
    store = toolkit.cache.CacheStore(backend)
    with pytest.warns(DeprecationWarning, match="store="):
        cache = toolkit.ResponseCacheMiddleware(_ok, store=store)
    assert cache.store is store


def test_a_backend_and_a_cache_store_together_are_refused() -> None:
    """ResponseCacheMiddleware builds a store on ``backend=`` or uses ``cache=``: not both."""
    with pytest.raises(toolkit.ConfigurationError, match=r"cache=.*backend="):
        toolkit.ResponseCacheMiddleware(
            _ok, cache=toolkit.cache.current_cache(), backend="memory://"
        )


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: toolkit.RateLimitMiddleware(_ok, algorithm=None), "algorithm=None"),
        (lambda: toolkit.ResponseCacheMiddleware(_ok, wait=None), "wait=None"),
        (lambda: toolkit.CircuitBreaker("api", probes=None), "probes=None"),
        (lambda: SlowAPIMiddleware(_ok, shadow=None), "shadow=None"),
        (lambda: toolkit.cached(ttl=1, serializer=None), "serializer=None"),
        (lambda: toolkit.cache.cached_response(ttl=1, methods=None), "methods=None"),
        (lambda: toolkit.AgentPool(dict, warm=None), "warm=None"),
    ],
)
def test_none_for_the_setting_is_the_old_spelling_of_DEFAULT(
    build: Callable[[], Any], named: str
) -> None:
    """Where None is no value of the setting, it still means "the setting", with a warning."""
    with pytest.warns(DeprecationWarning, match=rf"\({named}\) is deprecated: use .*DEFAULT"):
        build()


def test_none_where_the_setting_takes_none_sets_it() -> None:
    """``limit=None`` is no default limit, even over settings that have one; DEFAULT keeps
    theirs."""
    settings = toolkit.settings.RateLimitSettings(limit="5/minute")
    assert toolkit.RateLimitMiddleware(_ok, settings=settings).settings.limit == "5/minute"
    assert toolkit.RateLimitMiddleware(_ok, settings=settings, limit=DEFAULT).settings.limit
    assert toolkit.RateLimitMiddleware(_ok, settings=settings, limit=None).settings.limit is None
    cache_settings = toolkit.settings.CacheSettings(caller="api_key")
    cache = toolkit.ResponseCacheMiddleware(_ok, settings=cache_settings, caller=None)
    assert cache.settings.caller is None  # the credentials, the setting's own None


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: toolkit.RetryBudget(0.2, 5, "10s"), "minimum=, window="),
        (lambda: toolkit.cache.LocalTier(10, 60.0, 1024), "max_bytes="),
        (lambda: toolkit.identity.ClientAddress((), "forwarded"), "header="),
        (lambda: toolkit.resilience.BreakerRegistry(None, None), "settings="),
    ],
)
def test_options_given_by_position_still_work_with_a_warning(
    build: Callable[[], Any], named: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"by position is deprecated: use {named}"):
        build()


def test_a_budget_given_by_position_is_the_same_budget() -> None:
    with pytest.warns(DeprecationWarning, match="by position"):
        old = toolkit.RetryBudget(0.5, 3, "20s")
    new = toolkit.RetryBudget(0.5, minimum=3, window="20s")
    assert repr(old) == repr(new)


@pytest.mark.parametrize(
    ("name", "new", "value"),
    [
        ("MODE_DEFAULT", "toolkit.DEFAULT", DEFAULT),
        ("DEFAULTS", "toolkit.settings.PoolSettings()", None),
    ],
)
@pytest.mark.parametrize("module", ["toolkit.pool", "toolkit.pool.pool"])
def test_the_pools_own_defaults_are_deprecated(
    module: str, name: str, new: str, value: object
) -> None:
    with pytest.warns(
        DeprecationWarning, match=re.escape(f"{module}.{name} is deprecated: use {new}")
    ):
        found = getattr(importlib.import_module(module), name)
    if value is not None:
        assert found is value
    else:
        assert found == toolkit.settings.PoolSettings()


def test_the_resilience_default_is_the_one_sentinel() -> None:
    assert toolkit.resilience.DEFAULT is DEFAULT
    assert repr(DEFAULT) == "DEFAULT"


def test_unknown_flag_is_in_the_error_tree_and_still_in_flags() -> None:
    assert toolkit.flags.UnknownFlag is toolkit.errors.UnknownFlag
    assert issubclass(toolkit.errors.UnknownFlag, toolkit.ConfigurationError)
    assert "UnknownFlag" in (toolkit.errors.__doc__ or "")
    with pytest.raises(toolkit.errors.UnknownFlag):
        FlagStore().definition("no.such-flag")


# --- flags= on the function caches ------------------------------------------------------------


class Switch:
    """A flag source with only ``key`` off; counts the questions."""

    def __init__(self, off: str) -> None:
        self.off = off
        self.asked: list[str] = []

    def evaluate(self, key: str, *, caller: str | None = None) -> Any:
        raise NotImplementedError

    def variant(self, key: str, *, caller: str | None = None) -> str:
        return "off" if key == self.off else "on"

    def is_enabled(self, key: str, *, caller: str | None = None) -> bool:
        self.asked.append(key)
        return key != self.off


@pytest.mark.anyio
async def test_cached_reads_its_kill_switch_from_the_given_source() -> None:
    """``@cached(flags=...)`` asks that source, not the current store, at every call."""
    switch = Switch(off="cache.function")
    calls = 0

    @toolkit.cached(ttl=60, namespace="conventions", flags=switch)
    async def count(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    with override({"cache.function": "on"}):  # the current store would cache
        assert [await count(1), await count(1)] == [1, 1]
    assert calls == 2
    assert switch.asked == ["cache.function", "cache.function"]

    @toolkit.cached(ttl=60, namespace="conventions-sync", flags=switch)
    def count_sync(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    assert [count_sync(1), count_sync(1)] == [1, 1]
    assert calls == 4


@pytest.mark.anyio
async def test_cache_embeddings_reads_its_kill_switch_from_the_given_source() -> None:
    switch = Switch(off="cache.embeddings")
    batches: list[list[str]] = []

    @toolkit.cache_embeddings(model="conventions", flags=switch)
    async def embed(texts: list[str]) -> list[list[float]]:
        batches.append(list(texts))
        return [[1.0] for _ in texts]

    with override({"cache.embeddings": "on"}):
        await embed(["a"])
        await embed(["a"])
    assert batches == [["a"], ["a"]]
    assert switch.asked == ["cache.embeddings", "cache.embeddings"]

    on = Switch(off="nothing")

    @toolkit.cache_embeddings(model="conventions-on", flags=on)
    async def embed_on(texts: list[str]) -> list[list[float]]:
        batches.append(list(texts))
        return [[1.0] for _ in texts]

    with override({"cache.embeddings": "off"}):  # the current store would not cache
        await embed_on(["b"])
        await embed_on(["b"])
    assert batches[2:] == [["b"]]


def test_the_openfeature_adapter_and_the_toolkit_store_answer_as_a_flag_source() -> None:
    """``flags=`` takes either; both answer the three questions the capabilities ask."""
    for source in (FlagStore(), OpenFeatureFlags(store=FlagStore())):
        assert all(callable(getattr(source, q)) for q in ("evaluate", "variant", "is_enabled"))


def test_install_wires_the_capabilities_with_the_new_names() -> None:
    """install() itself passes backend= and cache=: no warning on the way."""
    app = Starlette()
    toolkit.install(app)
    names = {m.cls.__name__: m.kwargs for m in app.user_middleware}  # type: ignore[attr-defined]
    assert "backend" in names["RateLimitMiddleware"]
    assert "cache" in names["ResponseCacheMiddleware"]
