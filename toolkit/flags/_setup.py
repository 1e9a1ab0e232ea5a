"""The flag source that settings describe: the toolkit's store, or the app's OpenFeature."""

from __future__ import annotations

from opentelemetry import metrics

from toolkit.backends import FlagStorage
from toolkit.errors import ConfigurationError
from toolkit.flags._model import OFF, ON
from toolkit.flags._registry import RATELIMIT, TRACING, declare
from toolkit.flags._store import FlagStore
from toolkit.identity import CallerResolver, ClientAddress
from toolkit.settings import ToolkitSettings


def flag_store_from_settings(
    settings: ToolkitSettings,
    backend: FlagStorage,
    *,
    meter_provider: metrics.MeterProvider | None = None,
) -> FlagStore:
    """A store over ``backend``: the flags declared in settings, each capability's kill switch
    defaulting to its ``enabled`` setting, rollouts bucketed by ``flags.caller``.

    Raises:
        ConfigurationError: ``flags.caller`` is an async function (a rollout finds its
            caller without awaiting, inside a sync ``is_enabled``).
    """
    for key, declared in settings.flags.declare.items():
        declare(
            key,
            variants=declared.variants,
            default=declared.default,
            description=declared.description,
        )
    defaults = {
        RATELIMIT: ON if settings.ratelimit.enabled else OFF,
        TRACING: ON if settings.telemetry.enabled else OFF,
        **settings.flags.defaults,
    }
    if settings.flags.caller.is_async:
        raise ConfigurationError(
            f"flags.caller={settings.flags.caller}: an async function, but a rollout finds "
            "its caller without awaiting (is_enabled is sync); give a sync function"
        )
    caller = CallerResolver(
        settings.flags.caller,
        ClientAddress.from_settings(settings.ratelimit),
        hook="flags.caller",
    )
    return FlagStore(
        backend,
        defaults=defaults,
        caller=caller,
        resync_interval=settings.flags.resync_interval,
        meter_provider=meter_provider,
    )
