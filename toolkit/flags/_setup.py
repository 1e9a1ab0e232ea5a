"""The flag source that settings describe: the toolkit's store, or the app's OpenFeature."""

from __future__ import annotations

from opentelemetry import metrics

from toolkit.backends import FlagStorage
from toolkit.flags._model import OFF, ON
from toolkit.flags._registry import RATELIMIT, TRACING, declare
from toolkit.flags._store import FlagStore
from toolkit.identity import ClientAddress, KeyResolver
from toolkit.settings import ToolkitSettings


def flag_store_from_settings(
    settings: ToolkitSettings,
    backend: FlagStorage,
    *,
    meter_provider: metrics.MeterProvider | None = None,
) -> FlagStore:
    """A store over ``backend``: the flags declared in settings, each capability's kill switch
    defaulting to its ``enabled`` setting, rollouts bucketed by ``flags.subject``."""
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
    subject = KeyResolver(
        settings.flags.subject,
        ClientAddress.from_settings(settings.ratelimit),
        hook="flags.subject",
    )
    return FlagStore(
        backend,
        defaults=defaults,
        subject=subject,
        resync_interval=settings.flags.resync_interval,
        meter_provider=meter_provider,
    )
