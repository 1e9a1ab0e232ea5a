"""``toolkit.step("memory.m1")``: a span for one step of an agent pipeline (a memory layer, a
retrieval strategy, a tool), as a decorator or a context manager.

A step is named by its name (``memory.m1``, with ``toolkit.step.name``); a tool
(``tool=True``) is the conventions' ``execute_tool {name}`` with ``gen_ai.tool.name``. Either
way its duration goes to ``toolkit.agent.step.duration`` under its bounded name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context, trace

from toolkit.agents._run import SpanRun, start_step
from toolkit.agents._telemetry import current_agent_telemetry
from toolkit.agents._wrap import wrap
from toolkit.errors import ConfigurationError
from toolkit.flags import TRACING_AGENTS, FlagSource, current_flags

logger = logging.getLogger("toolkit.agents")

F = TypeVar("F", bound=Callable[..., Any])


class _Off:
    """A step entered while telemetry is off: only the token that undoes entering it."""

    __slots__ = ("stacked",)

    def __init__(self) -> None:
        self.stacked: object = None


# The steps entered as context managers in this context, innermost first: a Step object
# holds no state of its own, so one module-level step may be entered by concurrent tasks.
_ENTERED: ContextVar[SpanRun | _Off | None] = ContextVar("toolkit_step", default=None)


class Step:
    """One named step: decorate a function with it, or enter it (``with`` / ``async with``).

        @toolkit.step("memory.m1")
        async def recall(query: str) -> list[str]: ...

        with toolkit.step("rerank"):
            ranked = rerank(found)

    Entering returns the step's span (a non-recording one when telemetry is off), for
    attributes of your own. Build one with :func:`step`.
    """

    __slots__ = ("_flags", "name", "tool")

    def __init__(self, name: str, *, tool: bool = False, flags: FlagSource | None = None) -> None:
        """The arguments of :func:`step`; ``flags``: where the ``tracing.agents`` flag is read,
        the current flags when None."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"step({name!r}): a name, e.g. step('memory.m1')")
        self.name = name
        self.tool = tool
        self._flags = flags

    def __repr__(self) -> str:
        return f"step({self.name!r}{', tool=True' if self.tool else ''})"

    def _open(
        self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> SpanRun | None:
        del args, kwargs
        try:
            if not (self._flags or current_flags()).is_enabled(TRACING_AGENTS):
                return None
            return start_step(current_agent_telemetry(), self.name, tool=self.tool)
        except Exception:
            logger.exception("toolkit.agents: starting the span of step %s failed", self.name)
            return None

    def __call__(self, function: F) -> F:
        """``function`` (sync, async, generator or async generator) with each call a step."""
        return wrap(function, self._open)

    def __enter__(self) -> trace.Span:
        run = self._open()
        if run is None:
            off = _Off()
            off.stacked = _ENTERED.set(off)
            return trace.INVALID_SPAN
        run.attached = context.attach(run.context)
        run.stacked = _ENTERED.set(run)
        return run.span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entered = _ENTERED.get()
        if entered is None:  # exited in another context than it was entered in
            return
        try:
            _ENTERED.reset(entered.stacked)  # type: ignore[arg-type]
        except ValueError:
            _ENTERED.set(None)
        if isinstance(entered, SpanRun):
            context.detach(entered.attached)  # type: ignore[arg-type]
            entered.end(error)

    async def __aenter__(self) -> trace.Span:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)


def step(name: str, *, tool: bool = False, flags: FlagSource | None = None) -> Step:
    """A step of an agent pipeline, as a decorator or a context manager (see :class:`Step`).

    Args:
        name: the step's name, e.g. ``memory.m1`` (``toolkit.step.name``, and the span's name),
            or a tool's (``gen_ai.tool.name``); on metrics, the first
            ``agents.max_label_values`` names, then ``other``.
        tool: a tool the agent calls: an ``execute_tool {name}`` span.
        flags: where the ``tracing.agents`` flag is read; the current flags when None. Off
            means no span and no metric: the step runs bare.

    Raises:
        ConfigurationError: for an empty name.
    """
    return Step(name, tool=tool, flags=flags)
