"""The blocked loop thread's stack, sampled from the watchdog thread, and how it is shown.

A sample is taken while the loop is blocked (``sys._current_frames()``, cheap: no source is
read then); what a report keeps is decided afterwards: the application's frames (not the
standard library's, an installed package's or the toolkit's), and the innermost frame
whatever it is, since that is where the thread waits.
"""

from __future__ import annotations

import asyncio
import functools
import linecache
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_MAX_SAMPLED: Final = 200
"""Frames read from the loop thread at most: deeper stacks lose their outermost frames."""
_MAX_TEXT: Final = 200
"""Characters kept of a source line or a task description."""

_OWN: Final = str(Path(__file__).with_name("_loop_causes.py"))
"""The GC timer's file: the watchdog may sample the loop thread inside its gc callback."""

_NOT_APPLICATION: Final = tuple(
    sorted(
        {
            str(Path(path).resolve())
            for name in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(name))
        }
        | {str(Path(__file__).resolve().parents[1])}  # the toolkit itself
    )
)
"""Where the code of everything but the application lives."""


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One frame of a blocking stack: where, and the line of source (empty when unknown)."""

    file: str
    line: int
    function: str
    source: str = ""

    def __str__(self) -> str:
        text = f'  File "{self.file}", line {self.line}, in {self.function}'
        return f"{text}\n    {self.source}" if self.source else text

    @property
    def place(self) -> str:
        """``path/to/app.py:31``."""
        return f"{self.file}:{self.line}"


Sampled = tuple[tuple[str, int, str], ...]
"""(file, line, function) per frame, innermost first: what the watchdog reads while blocked."""


def sample_stack(thread_id: int) -> Sampled:
    """The frames the thread ``thread_id`` is running, innermost first (empty if it is gone)."""
    frame = sys._current_frames().get(thread_id)
    frames: list[tuple[str, int, str]] = []
    while frame is not None and len(frames) < _MAX_SAMPLED:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno or 0, code.co_name))
        frame = frame.f_back
    return tuple(frames)


def running_task(loop: asyncio.AbstractEventLoop) -> str | None:
    """The task ``loop`` is running, as ``Task-7 (write_note)``; None between tasks."""
    task = asyncio.current_task(loop)
    if task is None:
        return None
    coroutine = task.get_coro()
    name = getattr(coroutine, "__qualname__", type(coroutine).__name__)
    return f"{task.get_name()} ({name})"[:_MAX_TEXT]


@functools.lru_cache(maxsize=1024)
def is_application(file: str) -> bool:
    """Whether ``file`` is the application's: not frozen or generated, nor under the standard
    library, the installed packages or the toolkit."""
    if file.startswith("<"):
        return False
    try:
        resolved = str(Path(file).resolve())
    except (OSError, ValueError):
        return False
    return not any(resolved == root or resolved.startswith(root + "/") for root in _NOT_APPLICATION)


def kept_frames(sampled: Sampled, depth: int) -> tuple[StackFrame, ...]:
    """The frames a report shows, outermost first: the application's and the innermost one,
    at most ``depth`` of them (the innermost kept), each with its source line."""
    sampled = tuple(frame for frame in sampled if frame[0] != _OWN)
    kept = [frame for i, frame in enumerate(sampled) if i == 0 or is_application(frame[0])][:depth]
    return tuple(
        StackFrame(file, line, function, linecache.getline(file, line).strip()[:_MAX_TEXT])
        for file, line, function in reversed(kept)
    )


def blocking_frame(frames: tuple[StackFrame, ...]) -> StackFrame | None:
    """The innermost application frame (the call that blocked), else the innermost one."""
    for frame in reversed(frames):
        if is_application(frame.file):
            return frame
    return frames[-1] if frames else None
