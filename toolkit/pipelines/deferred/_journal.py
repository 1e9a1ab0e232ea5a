"""The crash journal of in-process deferred work: what a crashed process had accepted and
not finished, told by the next one.

Each process keeps one small JSON file, ``<service>.<host>.<pid>.json`` in the
``defer.journal`` directory, holding its count of tasks accepted and not finished, by task
name. The runner rewrites it off the event loop (a worker thread), at most every
:data:`WRITE_INTERVAL`, whenever the count changed, and removes it after a clean drain. So a
file outlives only a process that did not drain: killed, crashed, out of memory.

At start, a process claims the files of its service and host whose process is gone (or whose
pid is its own: a container restarted under the same pid), by renaming each (one claimer
wins), and reports their counts: a warning and ``toolkit.deferred.lost``.

Limits, by design (cheap, one machine): the count is as of the last write, up to
:data:`WRITE_INTERVAL` before the crash; only a process of the same service on the same host
with access to the directory reports it (a container needs the directory on a volume that
survives it); a pid reused by an unrelated live process hides a file until that process ends;
it counts what was lost, it does not keep the tasks (the durable mode does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Final

logger = logging.getLogger("toolkit.pipelines")

WRITE_INTERVAL: Final = 0.1
"""Seconds between two writes of the journal, at most one per interval while tasks come."""
_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _part(text: str) -> str:
    return "".join(c if c in _SAFE else "_" for c in text)[:64] or "_"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class Journal:
    """One process's journal file in ``directory``, for ``service`` on this host."""

    def __init__(self, directory: str, service: str) -> None:
        self.directory = Path(directory)
        self._prefix = f"{_part(service)}.{_part(socket.gethostname())}."
        self.pid = os.getpid()
        self.path = self.directory / f"{self._prefix}{self.pid}.json"

    def write(self, pending: Mapping[str, int]) -> None:
        """Record ``pending`` (tasks accepted and not finished, by name); blocking I/O, for
        a worker thread. A failure is logged, never raised: the journal is a report."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"pid": self.pid, "pending": dict(pending)}))
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("deferred work: cannot write the crash journal %s: %s", self.path, exc)

    def remove(self) -> None:
        """After a clean drain: nothing of this process is pending."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def claim_lost(self) -> dict[str, int]:
        """The pending counts of every file a gone process of this service left here,
        summed by task name; the files are removed. Blocking I/O, for a worker thread."""
        lost: dict[str, int] = {}
        try:
            candidates = list(self.directory.glob(f"{self._prefix}*.json"))
        except OSError:
            return lost
        for path in candidates:
            pid_text = path.name[len(self._prefix) : -len(".json")]
            if not pid_text.isdecimal():
                continue
            pid = int(pid_text)
            if pid != self.pid and _alive(pid):
                continue
            claimed = path.with_name(f"{path.name}.claimed-{self.pid}")
            try:
                os.rename(path, claimed)  # atomic: of two claimers, one wins
            except OSError:
                continue
            try:
                pending = json.loads(claimed.read_text()).get("pending", {})
                for name, count in pending.items():
                    if isinstance(name, str) and isinstance(count, int) and count > 0:
                        lost[name] = lost.get(name, 0) + count
            except (OSError, ValueError, AttributeError) as exc:
                logger.warning("deferred work: unreadable crash journal %s: %s", path, exc)
            with contextlib.suppress(OSError):
                claimed.unlink()
        return lost
