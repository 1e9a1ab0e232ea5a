"""Framework plugins: the installed distributions registered in the ``toolkit.plugins``
entry-point group, found, loaded and applied by ``install()``.

A plugin adapts one framework (pydantic-ai, the OpenAI SDK, ...) to the toolkit: its entry
point names a :class:`Plugin`, which says which framework it adapts and what to do with a
:class:`PluginContext` (the app, the settings, the providers, the stores). ``install()``
loads every installed plugin before it touches the app and applies them once every
capability is set up:

- a plugin named in ``plugins.disabled`` is left off (one log line);
- a plugin whose framework is not installed does nothing (one log line);
- a plugin that raises while loading or applying fails the startup with a
  :class:`~toolkit.errors.ConfigurationError` naming it and how to switch it off. An installed
  plugin is the operator's choice: an app served without the breakers, retries or spans it
  was installed for, behind a warning nobody reads, is worse than a startup that says which
  plugin broke and that one setting leaves it off.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from opentelemetry import metrics, trace
from starlette.applications import Starlette

from toolkit.backends import Backend
from toolkit.cache import CacheStore
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagSource
from toolkit.resilience import BreakerRegistry
from toolkit.settings import PluginsSettings, ToolkitSettings

__all__ = ["PLUGIN_GROUP", "Plugin", "PluginContext"]

PLUGIN_GROUP: Final = "toolkit.plugins"
"""The entry-point group plugins register in; the entry point's name is the plugin's name."""

logger = logging.getLogger("toolkit.plugins")

ShutdownCallback = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True)
class PluginContext:
    """What a plugin's ``apply`` receives from ``install()``: the app and what the toolkit set
    up for it. A plugin uses these, never the global OpenTelemetry providers.

    Attributes:
        app: the Starlette or FastAPI app ``install()`` was called on.
        settings: every toolkit setting, validated.
        tracer_provider / meter_provider: the providers the toolkit's own spans and metrics
            use (the app's when it gave them, else the toolkit's).
        backend: the storage every capability shares.
        flags: where kill switches and variants are read.
        cache: the store of every cache (``@cached``, responses, embeddings).
        breakers: the circuit breakers ``@resilient(breaker="name")`` uses.
    """

    app: Starlette
    settings: ToolkitSettings
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    backend: Backend
    flags: FlagSource
    cache: CacheStore
    breakers: BreakerRegistry
    _shutdown: list[ShutdownCallback] = field(default_factory=list, repr=False, compare=False)

    def on_shutdown(self, callback: ShutdownCallback) -> None:
        """Call ``callback`` (a function, or an async one) when the app shuts down, before
        the toolkit closes its stores; the last registered runs first. An error it raises is
        logged, and the shutdown goes on."""
        self._shutdown.append(callback)


@dataclass(frozen=True)
class Plugin:
    """What a ``toolkit.plugins`` entry point names.

        plugin = Plugin(framework="pydantic_ai", apply=_apply, versions=">=1.0,<3")

    Args:
        framework: the import name of the framework the plugin adapts; when it cannot be
            imported, ``install()`` leaves the plugin off with one log line. The module the
            entry point names must not import it.
        apply: called once by ``install()`` with a :class:`PluginContext`, after every
            capability is set up; what it raises fails the startup, naming the plugin.
        versions: the framework versions the plugin supports (as its README states them),
            shown in the log line ``install()`` writes.
    """

    framework: str
    apply: Callable[[PluginContext], None]
    versions: str = ""


def _switch_off(name: str) -> str:
    return f"switch it off with TOOLKIT_PLUGINS__DISABLED='[\"{name}\"]'"


def _framework_installed(framework: str) -> bool:
    try:
        return importlib.util.find_spec(framework) is not None
    except (ImportError, ValueError):  # a parent package missing, or blocked
        return False


def _load(entry: EntryPoint) -> Plugin:
    origin = entry.value if entry.dist is None else f"{entry.value}, from {entry.dist.name}"
    try:
        plugin = entry.load()
    except Exception as exc:
        raise ConfigurationError(
            f"toolkit plugin {entry.name!r} ({origin}) failed to load: {exc!r}; fix or "
            f"uninstall it, or {_switch_off(entry.name)}"
        ) from exc
    if not isinstance(plugin, Plugin):
        raise ConfigurationError(
            f"toolkit plugin {entry.name!r} ({origin}) names {type(plugin).__name__}, not a "
            f"toolkit.plugins.Plugin; fix or uninstall it, or {_switch_off(entry.name)}"
        )
    return plugin


@dataclass
class LoadedPlugins:
    """The plugins ``install()`` applies (by name, in name order), and their shutdown."""

    plugins: dict[str, Plugin] = field(default_factory=dict)
    _contexts: list[PluginContext] = field(default_factory=list, repr=False)

    def apply(self, context: PluginContext) -> None:
        """Apply each plugin to the app.

        Raises:
            ConfigurationError: a plugin raised, naming it and how to switch it off.
        """
        self._contexts.append(context)
        for name, plugin in self.plugins.items():
            try:
                plugin.apply(context)
            except Exception as exc:
                raise ConfigurationError(
                    f"toolkit plugin {name!r} failed to apply: {exc}; fix it, or "
                    f"{_switch_off(name)}"
                ) from exc
            logger.info(
                "toolkit plugin %s applied (%s %s)", name, plugin.framework, plugin.versions
            )

    async def shutdown(self) -> None:
        """Run what the plugins registered with ``on_shutdown``, the last first."""
        for context in self._contexts:
            while context._shutdown:
                callback = context._shutdown.pop()
                try:
                    result = callback()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("toolkit plugin shutdown callback %r failed", callback)
        self._contexts.clear()


def load_plugins(settings: PluginsSettings) -> LoadedPlugins:
    """The installed plugins that are switched on and whose framework is installed, loaded.

    Raises:
        ConfigurationError: ``plugins.disabled`` names no installed plugin, or a plugin
            failed to load.
    """
    found = {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}
    unknown = sorted(set(settings.disabled) - found.keys())
    if unknown:
        installed = ", ".join(repr(name) for name in sorted(found)) or "none"
        raise ConfigurationError(
            f"plugins.disabled names {', '.join(repr(name) for name in unknown)}, which no "
            f"installed plugin is called (installed: {installed}); e.g. "
            "TOOLKIT_PLUGINS__DISABLED='[\"pydantic-ai\"]'"
        )
    loaded = LoadedPlugins()
    for name in sorted(found):
        if name in settings.disabled:
            logger.info("toolkit plugin %s is switched off by plugins.disabled", name)
            continue
        plugin = _load(found[name])
        if not _framework_installed(plugin.framework):
            logger.info(
                "toolkit plugin %s does nothing: %s is not installed", name, plugin.framework
            )
            continue
        loaded.plugins[name] = plugin
    return loaded
