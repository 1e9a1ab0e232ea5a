"""The directory the workers of one server share to merge ``/metrics``.

One directory per server (named after the supervisor's pid, mode 0700), holding per worker
``<id>.sock``, the unix socket it answers its metrics on, and ``<id>.json``, the snapshot of
its last answer; ``retired.json``, the cumulative totals of the workers that left and their
ids; and ``lock``, the ``flock`` under which the retired totals change. A worker's id is its
pid and a random suffix, so a reused pid is never mistaken for a worker that left.

The blocking functions here run in a worker thread, the ``async`` ones on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from toolkit.telemetry._merge import Family, parse_families, retire

logger = logging.getLogger("toolkit.telemetry")

DIRECTORY_PREFIX: Final = "toolkit-metrics-"
MAGIC: Final = b"toolkit-metrics/1\n"
"""First line of every answer and snapshot: a worker of another toolkit version is not read."""
ASK: Final = b"m"
"""What a scrape sends: a connection that closes without it is a liveness probe."""
MAX_ANSWER: Final = 64 * 1024 * 1024
"""Bytes at most read from one worker: a broken peer cannot exhaust memory."""
_KEPT_IDS: Final = 1024
"""Ids of the retired workers remembered: plenty for the scrapes in flight when one leaves."""
_SOCKET_PATH_MAX: Final = 107  # sun_path of Linux, less its terminating NUL


class Gone:
    """A worker that no longer listens: it stopped, or died."""


class Late:
    """A worker that did not answer in time (stopped, stuck, swamped), or answered garbage."""


GONE: Final = Gone()
LATE: Final = Late()

Answer = tuple[int, list[Family]] | Gone | Late
"""What asking a worker gave: its pid and families, or why not."""


def encode(pid: int, families: list[Family]) -> bytes:
    return MAGIC + json.dumps([pid, families], separators=(",", ":")).encode()


def decode(payload: bytes) -> tuple[int, list[Family]]:
    """Raises ValueError on anything that is not a worker's answer."""
    if not payload.startswith(MAGIC):
        raise ValueError("not a toolkit metrics answer")
    pid, families = json.loads(payload[len(MAGIC) :])
    return int(pid), parse_families(families)


def server_directory(base: str) -> Path:
    """This server's directory under ``base``: workers of one server share a parent."""
    return Path(base) / f"{DIRECTORY_PREFIX}{os.getuid()}-{os.getppid()}"


class WorkerDirectory:
    """This worker's view of the shared directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.worker = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.socket = self.socket_of(self.worker)

    def socket_of(self, worker: str) -> Path:
        return self.path / f"{worker}.sock"

    def snapshot_of(self, worker: str) -> Path:
        return self.path / f"{worker}.json"

    def open(self) -> None:
        """Create the directory (or join it), and remove those of servers no longer running.

        Raises:
            OSError: it cannot be made or is not ours, or socket paths would be too long.
        """
        if len(os.fsencode(self.socket)) > _SOCKET_PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, f"socket path too long: {self.socket}")
        _remove_stale(self.path.parent)
        with contextlib.suppress(FileExistsError):
            self.path.mkdir(mode=0o700)
        info = self.path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(errno.EPERM, f"{self.path} is not a directory of this user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise OSError(errno.EPERM, f"{self.path} is open to other users (mode 0700 wanted)")

    def peers(self) -> list[str]:
        """The other workers: every socket or snapshot left in the directory, but ours."""
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        found = {e.rsplit(".", 1)[0] for e in entries if e.endswith((".sock", ".json"))}
        found.discard(self.worker)
        found.discard("retired")
        return sorted(found)

    def write_snapshot(self, payload: bytes) -> None:
        _write_atomically(self.snapshot_of(self.worker), payload)

    def read_snapshot(self, worker: str) -> tuple[int, list[Family]] | None:
        try:
            return decode(self.snapshot_of(worker).read_bytes())
        except (OSError, ValueError, TypeError, KeyError):
            return None

    @contextlib.contextmanager
    def locked(self, deadline: float) -> Iterator[bool]:
        """Hold the directory's lock, trying until ``deadline`` (``time.monotonic()``); yields
        whether it is held: a worker stopped while holding it must not stall every scrape."""
        try:
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield False
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.005)  # on a worker thread (anyio.to_thread), never the loop
            yield True
        finally:
            os.close(fd)  # releases the lock

    def read_retired(self) -> tuple[list[str], list[Family]]:
        """The ids of the workers that left, and their cumulative totals."""
        try:
            data = json.loads((self.path / "retired.json").read_bytes())
            return [str(worker) for worker in data["workers"]], parse_families(data["families"])
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, TypeError, KeyError):
            logger.warning("%s/retired.json is unreadable: starting its totals again", self.path)
            return [], []

    def write_retired(self, workers: list[str], families: list[Family]) -> None:
        data = {"workers": workers[-_KEPT_IDS:], "families": families}
        _write_atomically(self.path / "retired.json", json.dumps(data).encode())

    def retire(
        self, worker: str, leaving: list[Family] | None, retired: tuple[list[str], list[Family]]
    ) -> tuple[list[str], list[Family]]:
        """``worker`` leaves (hold the lock): its cumulative series, ``leaving`` or else its
        snapshot's, join the retired totals, and its files go."""
        workers, families = retired
        if leaving is None:
            snapshot = self.read_snapshot(worker)
            leaving = snapshot[1] if snapshot is not None else []
        if worker not in workers:
            workers, families = [*workers, worker], retire(families, leaving)
        for path in (self.snapshot_of(worker), self.socket_of(worker)):
            path.unlink(missing_ok=True)
        return workers, families

    def others_listening(self) -> bool:
        """Whether another worker still accepts connections (a probe it reads as nothing)."""
        for worker in self.peers():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.2)
                try:
                    probe.connect(os.fspath(self.socket_of(worker)))
                except OSError:
                    continue
                return True
        return False

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _write_atomically(path: Path, payload: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


def _remove_stale(base: Path) -> None:
    """Directories of this user's servers whose supervisor is no longer running (a server
    killed before its workers could clean up)."""
    prefix = f"{DIRECTORY_PREFIX}{os.getuid()}-"
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for entry in entries:
        pid = entry.removeprefix(prefix)
        if entry.startswith(prefix) and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(base / entry, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        pass
    return True


async def ask(path: Path, seconds: float) -> Answer:
    """A worker's families through its socket, within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_unix_connection(os.fspath(path))
            try:
                writer.write(ASK)
                payload = await _read_all(reader)
            finally:
                writer.close()
    except (ConnectionRefusedError, FileNotFoundError):
        return GONE
    except (TimeoutError, OSError, ValueError):
        return LATE
    try:
        return decode(payload)
    except (ValueError, TypeError, KeyError):
        return LATE


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks, size = [], 0
    while chunk := await reader.read(1 << 16):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise ValueError(f"answer over {MAX_ANSWER} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
