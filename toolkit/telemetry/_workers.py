"""What ``/metrics`` serves: this process's metrics, or every worker's of a multi-worker server.

Under ``uvicorn --workers N`` or gunicorn every worker has its own meter provider and
Prometheus reader, and a scrape of the one port reaches one worker at random. Three ways to
serve every worker's series from any of them were weighed:

- ``prometheus_client``'s multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) keeps its own
  instruments' values in memory-mapped files; OpenTelemetry's reader is a collector called at
  scrape time, whose values live in the SDK of each process: it cannot reach them.
- Each worker writing its exposition to a shared directory, the scraped one merging the
  files: a worker only writes when it collects, so the files are as old as the interval of
  some timer of its own; every worker pays that timer, and a scrape serves stale values.
- The scraped worker asking its siblings live: current values, no cost between scrapes.

The last is what this does (:mod:`toolkit.telemetry._siblings` holds the directory and the
socket protocol, :mod:`toolkit.telemetry._merge` the merging). Each worker answers on a unix
socket in a per-server directory; the scraped one collects its own metrics and asks the
others at once, each answer bounded by ``telemetry.merge_timeout``, then merges every series
by its kind. A worker writes a snapshot of each answer before it sends it, so the newest
values any scrape has seen of it are on disk:

- a sibling that does not answer in time (stopped, stuck) is served from its snapshot, so
  no series drops while it hangs;
- a sibling that is gone (killed; a clean stop retires itself with its final counts) has
  its snapshot's cumulative series added to retired totals, and its files removed: the fleet's
  counters never go down when a worker restarts, so ``rate()`` sees no reset. Only what it
  counted after the last scrape and before it was killed is lost.

Collecting, merging and file work run in a thread; the loop only waits on sockets. The last
worker to stop removes the directory; directories of servers no longer running are removed
at startup. A single-process server (no supervisor detected, ``merge_workers=auto``) serves
its registry exactly as before: nothing of this is started or imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from prometheus_client import CollectorRegistry

from toolkit.settings import TelemetrySettings

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from toolkit.telemetry._merge import Family
    from toolkit.telemetry._siblings import Answer, WorkerDirectory

logger = logging.getLogger("toolkit.telemetry")

Encoder = Callable[[Any], bytes]
"""A ``prometheus_client`` encoder (``choose_encoder(accept)[0]``): registry to exposition."""


def detect_workers() -> str | None:
    """Which multi-worker server this process is a worker of: ``"gunicorn"`` (a process
    forked by gunicorn's arbiter), ``"uvicorn --workers"`` (spawned by uvicorn's multiprocess
    supervisor, which answers its health checks on a thread of the worker), or None."""
    if "gunicorn.arbiter" in sys.modules and os.environ.get("SERVER_SOFTWARE", "").startswith(
        "gunicorn/"
    ):
        return "gunicorn"
    if multiprocessing.parent_process() is not None and any(
        thread.name.endswith("(always_pong)") for thread in threading.enumerate()
    ):
        return "uvicorn --workers"
    return None


class MetricsExposition:
    """The exposition ``/metrics`` serves from ``registry``: merged across the workers of the
    server once :meth:`start` found several (or ``merge_workers="on"``), else this
    process's alone."""

    def __init__(self, registry: CollectorRegistry, settings: TelemetrySettings) -> None:
        self.registry = registry
        self.settings = settings
        self._fleet: _Fleet | None = None

    @property
    def merging(self) -> bool:
        """Whether scrapes are merged across workers."""
        return self._fleet is not None

    async def start(self) -> None:
        """Join the other workers when this process is one of several; never raises (a
        directory that cannot be used is logged, and this worker's metrics served alone)."""
        mode, server = self.settings.merge_workers, detect_workers()
        if mode == "off" or (mode == "auto" and server is None):
            if server is not None:
                logger.warning(
                    "%s serves one %s worker at random per scrape: "
                    "TOOLKIT_TELEMETRY__MERGE_WORKERS=off. Set it to auto to serve every "
                    "worker's series from any of them.",
                    self.settings.metrics_path,
                    server,
                )
            return
        try:
            self._fleet = await anyio.to_thread.run_sync(_Fleet, self.registry, self.settings)
            await self._fleet.listen()
        except OSError as exc:
            logger.warning(
                "%s serves this worker's metrics only: the workers' directory is unusable "
                "(%s); set TOOLKIT_TELEMETRY__MERGE_DIRECTORY to a directory of this user",
                self.settings.metrics_path,
                exc,
            )
            self._fleet = None
            return
        logger.info(
            "%s merges every worker's metrics (%s; %s)",
            self.settings.metrics_path,
            server or "merge_workers=on",
            self._fleet.directory.path,
        )

    async def render(self, encoder: Encoder) -> bytes:
        """The exposition, encoded by ``encoder``."""
        if self._fleet is None:
            # Collecting walks every instrument: keep that CPU work off the event loop.
            return await anyio.to_thread.run_sync(encoder, self.registry)
        return await self._fleet.render(encoder)

    async def stop(self) -> None:
        """Hand this worker's final counts to the others and remove its files (the
        directory too when it is the last worker)."""
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.leave()


class _Collected:
    """Merged families in the shape ``prometheus_client``'s encoders read."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class _Fleet:
    """This worker among the others: answering them, asking them, merging."""

    def __init__(self, registry: CollectorRegistry, settings: TelemetrySettings) -> None:
        from toolkit.telemetry._siblings import WorkerDirectory, server_directory

        self.registry = registry
        self.timeout = settings.merge_timeout
        base = settings.merge_directory or tempfile.gettempdir()
        self.directory: WorkerDirectory = WorkerDirectory(server_directory(base))
        self.directory.open()
        self._server: asyncio.Server | None = None
        # The OpenTelemetry reader hands each collection to one caller: collect one at a time.
        self._collecting = threading.Lock()

    async def listen(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._answer, os.fspath(self.directory.socket)
        )

    def _collect(self) -> tuple[list[Family], bytes]:
        """This worker's families, and the snapshot written of them (before anyone sees them)."""
        from toolkit.telemetry._merge import families_of
        from toolkit.telemetry._siblings import encode

        with self._collecting:
            families = families_of(self.registry.collect())
            payload = encode(os.getpid(), families)
            with contextlib.suppress(OSError):
                self.directory.write_snapshot(payload)
        return families, payload

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from toolkit.telemetry._siblings import ASK

        try:
            async with asyncio.timeout(self.timeout):
                asked = await reader.read(1)
            if asked == ASK:
                _, payload = await anyio.to_thread.run_sync(self._collect)
                writer.write(payload)
                async with asyncio.timeout(self.timeout):
                    await writer.drain()
        except (OSError, TimeoutError) as exc:
            logger.debug("a sibling's request for metrics failed: %r", exc)
        finally:
            writer.close()

    async def render(self, encoder: Encoder) -> bytes:
        from toolkit.telemetry._siblings import ask

        deadline = time.monotonic() + self.timeout
        peers = await anyio.to_thread.run_sync(self.directory.peers)
        asking = asyncio.gather(
            *(ask(self.directory.socket_of(peer), self.timeout) for peer in peers)
        )
        (own, _), answers = await asyncio.gather(anyio.to_thread.run_sync(self._collect), asking)
        return await anyio.to_thread.run_sync(
            self._merge, own, dict(zip(peers, answers, strict=True)), encoder, deadline
        )

    def _merge(
        self, own: list[Family], answers: dict[str, Answer], encoder: Encoder, deadline: float
    ) -> bytes:
        from toolkit.telemetry._merge import merge
        from toolkit.telemetry._siblings import GONE

        directory = self.directory
        with directory.locked(deadline) as held:
            retired = directory.read_retired()
            workers: list[tuple[int, list[Family]]] = [(os.getpid(), own)]
            gone = []
            for peer, answer in answers.items():
                if peer in retired[0]:
                    continue  # retired since it answered: its totals are counted there
                if isinstance(answer, tuple):
                    workers.append(answer)
                elif answer is GONE and held:
                    gone.append(peer)
                else:  # late, or gone while another worker holds the lock: its last values
                    snapshot = directory.read_snapshot(peer)
                    if snapshot is not None:
                        workers.append(snapshot)
            if gone:
                for peer in gone:
                    retired = directory.retire(peer, None, retired)
                with contextlib.suppress(OSError):
                    directory.write_retired(*retired)
        return encoder(_Collected(merge(workers, retired[1])))

    async def leave(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await anyio.to_thread.run_sync(self._leave)

    def _leave(self) -> None:
        directory = self.directory
        directory.socket.unlink(missing_ok=True)  # no sibling asks it from now on
        families, _ = self._collect()
        try:
            with directory.locked(time.monotonic() + self.timeout) as held:
                if not held:
                    return  # its snapshot stays, retired by the next scrape
                retired = directory.retire(directory.worker, families, directory.read_retired())
                if directory.others_listening():
                    directory.write_retired(*retired)
                else:
                    directory.remove()
        except OSError as exc:
            logger.debug("leaving the workers' directory failed: %r", exc)
