"""``agent-toolkit worker APP_MODULE``: a worker process of the durable queue.

It imports ``APP_MODULE`` (``myapp.main``, or ``myapp.main:app`` as uvicorn writes it: the
part before the colon), so that every ``@toolkit.background`` function the app defines is
registered by name, then runs the queue's tasks with the same settings as the app
(``TOOLKIT_*``, ``toolkit.toml``) until SIGTERM or SIGINT, which let the running tasks finish
within ``defer.grace``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import Any

from toolkit.errors import ConfigurationError
from toolkit.settings import ToolkitSettings


def add_command(commands: Any) -> None:
    """Register ``worker APP_MODULE`` on the CLI's subparsers."""
    worker = commands.add_parser(
        "worker", help="run the durable queue's deferred tasks (defer.durable)"
    )
    worker.add_argument(
        "app_module",
        metavar="APP_MODULE",
        help="the module that defines (or imports) the app's @background functions, "
        "e.g. myapp.main or myapp.main:app",
    )


def run(args: argparse.Namespace, settings: ToolkitSettings) -> int:
    """Import the app's module, then work until a signal stops the worker."""
    module = args.app_module.partition(":")[0]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the app is found from here
    try:
        from toolkit.pipelines.deferred._runners import require_engine

        require_engine()
        from toolkit.pipelines.deferred.durable._queue import redis_url

        url = redis_url(settings.defer.durable, settings.backend.url)
        importlib.import_module(module)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"agent-toolkit worker: cannot import {module!r}: {exc}", file=sys.stderr)
        return 2
    if not settings.defer.durable.enabled:
        print(
            "note: defer.durable.enabled is false: the app runs its deferred work in process "
            "and queues nothing here (TOOLKIT_DEFER__DURABLE__ENABLED=true in the app)",
            file=sys.stderr,
        )
    return asyncio.run(_work(settings, url))


async def _work(settings: ToolkitSettings, url: str) -> int:
    from toolkit.pipelines.deferred._in_process import InProcessRunner
    from toolkit.pipelines.deferred._runners import durable_worker
    from toolkit.telemetry.setup import setup_telemetry

    telemetry = setup_telemetry(settings.telemetry)
    local = InProcessRunner(
        settings.defer,
        service=settings.telemetry.service_name,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    worker = durable_worker(
        settings, local, url=url, handle_signals=True, meter_provider=telemetry.meter_provider
    )
    try:
        await worker.run()
    finally:
        telemetry.shutdown()
    return 0
