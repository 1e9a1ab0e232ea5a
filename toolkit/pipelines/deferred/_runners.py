"""The runner of deferred work an app gets from its settings: in process, or durable.

``install()`` calls :func:`deferred_runner`; ``agent-toolkit worker`` calls
:func:`durable_worker`. Durable mode's modules (and SAQ) are imported only when it is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import metrics, trace

from toolkit.errors import ConfigurationError
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._task import TaskRunner
from toolkit.settings import ToolkitSettings

if TYPE_CHECKING:
    from toolkit.pipelines.deferred.durable._worker import DurableWorker


def deferred_runner(
    settings: ToolkitSettings,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> TaskRunner:
    """The in-process runner, or, with ``defer.durable.enabled``, the durable runner over it
    (with a worker inside this process when ``defer.durable.workers_in_app``)."""
    local = InProcessRunner(
        settings.defer,
        service=settings.telemetry.service_name,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    durable = settings.defer.durable
    if not durable.enabled:
        return local
    require_engine()
    from toolkit.pipelines.deferred.durable._queue import redis_url
    from toolkit.pipelines.deferred.durable._runner import DurableRunner

    url = redis_url(durable, settings.backend.url)
    worker = None
    if durable.workers_in_app:
        worker = durable_worker(settings, local, url=url, meter_provider=meter_provider)
    return DurableRunner(durable, url, local=local, worker=worker, meter_provider=meter_provider)


def durable_worker(
    settings: ToolkitSettings,
    local: InProcessRunner,
    *,
    url: str | None = None,
    handle_signals: bool = False,
    meter_provider: metrics.MeterProvider | None = None,
) -> DurableWorker:
    """A worker of the durable queue that runs each task through ``local`` (its span,
    retries and metrics), finding its function in this process's registry."""
    require_engine()
    from toolkit.pipelines.deferred._background import lookup
    from toolkit.pipelines.deferred.durable._queue import redis_url
    from toolkit.pipelines.deferred.durable._worker import DurableWorker

    durable = settings.defer.durable
    return DurableWorker(
        durable,
        url or redis_url(durable, settings.backend.url),
        lookup=lookup,
        execute=local.run,
        grace=settings.defer.grace,
        handle_signals=handle_signals,
        meter_provider=meter_provider,
    )


def require_engine() -> None:
    """Raise ConfigurationError naming the extra to install when SAQ is missing."""
    try:
        import saq  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "defer.durable.enabled needs the durable queue's engine (SAQ): "
            'pip install "agent-server-toolkit[durable]"'
        ) from None
