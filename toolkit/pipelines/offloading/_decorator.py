"""``@toolkit.offload`` and ``toolkit.run_sync``: a synchronous call (sqlite3, a sync SDK
client, CPU-heavy parsing) run on the offload pool's threads instead of the event loop.

The pool (``_pool``) is the current one: the one ``install()`` made from the
``offload`` settings, else one made from the defaults on first use. The ``pipelines.offload``
flag, read at each call, sends calls back inline when off (the way they ran before).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, overload

from toolkit._current import Current
from toolkit.errors import ConfigurationError
from toolkit.flags import PIPELINES_OFFLOAD, FlagSource, current_flags
from toolkit.pipelines.offloading._pool import OffloadPool

logger = logging.getLogger("toolkit.pipelines")

P = ParamSpec("P")
R = TypeVar("R")

_CURRENT: Current[OffloadPool] = Current(OffloadPool)


def current_offload_pool() -> OffloadPool:
    """The pool ``install()`` set up, else one from the default settings, made on first use."""
    return _CURRENT.get()


def set_current_offload_pool(pool: OffloadPool | None) -> None:
    """Make ``pool`` the current one (``install()`` does); None: a default one on next use."""
    _CURRENT.set(pool)


class Offloaded(Generic[P, R]):
    """A synchronous function whose calls run on the offload pool: ``await fn(...)``.

    Called where no event loop runs in the calling thread (a sync FastAPI route, which
    already runs on a worker thread; a script; another offloaded function), the function
    runs right there and its value is returned, not an awaitable: that thread is off the
    loop already. Typed code there calls ``fn.__wrapped__(...)``, the plain function.
    Build one with :func:`offload`.
    """

    __wrapped__: Callable[P, R]

    def __init__(self, function: Callable[P, R], *, name: str, flags: FlagSource | None) -> None:
        functools.update_wrapper(self, function)
        self.name = name
        """The name of its span (``toolkit.offload {name}``) and metric label."""
        self._flags = flags

    def __repr__(self) -> str:
        return f"offload({self.__wrapped__!r}, name={self.name!r})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: it is off the loop already
            return self.__wrapped__(*args, **kwargs)  # type: ignore[return-value]
        return _run(self.name, self.__wrapped__, args, kwargs, self._flags)


@overload
def offload(function: Callable[P, R], /) -> Offloaded[P, R]: ...


@overload
def offload(
    *, name: str | None = None, flags: FlagSource | None = None
) -> Callable[[Callable[P, R]], Offloaded[P, R]]: ...


def offload(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    flags: FlagSource | None = None,
) -> Offloaded[P, R] | Callable[[Callable[P, R]], Offloaded[P, R]]:
    """Run each call of a synchronous function on the offload pool's threads, off the loop.

        @toolkit.offload                      # or @toolkit.offload(name="db.save")
        def save_message(db_path: str, text: str) -> int: ...

        row_id = await save_message("chat.db", "hi")

    The call waits for a thread within the request's deadline, runs in a copy of the caller's
    context (``toolkit.time_left()``, the current span), and has a ``toolkit.offload {name}``
    span under the caller's.

    Args:
        function: a synchronous function (not ``async def``, not a generator).
        name: its name on spans and metrics; its qualified name when None.
        flags: where the ``pipelines.offload`` flag is read; the current flags when None.
            Off means the function is called inline, on the loop, with no span or metric.

    Raises:
        ConfigurationError: at decoration, for an async or generator function, or an empty
            name.
        DeadlineExceeded: at call time, when the deadline passes before a thread is free
            (the function never ran) or while it runs (it goes on to its end).
        PoolExhaustedError: every thread busy and ``offload.max_waiting`` calls waiting
            (``install()`` answers 503).
        PoolClosedError: the pool was closed (the app is shutting down).
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError(f"offload(name={name!r}): a name, e.g. name='db.save'")

    def decorate(function: Callable[P, R]) -> Offloaded[P, R]:
        _check_sync("offload", function)
        return Offloaded(function, name=name or _name_of(function), flags=flags)

    if function is not None:
        return decorate(function)
    return decorate


async def run_sync(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``function(*args, **kwargs)`` on the offload pool's threads, awaited: what
    :func:`offload` does for one call. The ``pipelines.offload`` flag is read from the current
    flags (there is no ``flags=``: every keyword is ``function``'s).

        row_id = await toolkit.run_sync(cursor.execute, "select 1")

    Raises:
        ConfigurationError: for an async or generator function.
        DeadlineExceeded / PoolExhaustedError / PoolClosedError: as for :func:`offload`.
    """
    _check_sync("run_sync", function)
    return await _run(_name_of(function), function, args, kwargs, None)


async def _run(
    name: str,
    function: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    flags: FlagSource | None,
) -> R:
    try:
        on = (flags or current_flags()).is_enabled(PIPELINES_OFFLOAD)
    except Exception:  # a broken flag source: keep the loop free, as by default
        logger.exception("toolkit.pipelines: reading the pipelines.offload flag failed")
        on = True
    if not on:
        return function(*args, **kwargs)
    return await current_offload_pool().call(name, function, args, kwargs)


def _check_sync(where: str, function: Callable[..., Any]) -> None:
    if not callable(function):
        raise ConfigurationError(f"{where}({function!r}): a synchronous function to call")
    inner = function.func if isinstance(function, functools.partial) else function
    if inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner):
        raise ConfigurationError(
            f"{where}({_name_of(function)}): an async function runs on the loop already; "
            "await it (offload is for synchronous code)"
        )
    if inspect.isgeneratorfunction(inner):
        raise ConfigurationError(
            f"{where}({_name_of(function)}): a generator would be stepped on the loop; offload "
            "a function that returns a list instead"
        )


def _name_of(function: Callable[..., Any]) -> str:
    """``save_message``, ``Store.save``; a partial by its function; else its type's name."""
    inner = function.func if isinstance(function, functools.partial) else function
    name = getattr(inner, "__qualname__", None)
    return name if isinstance(name, str) and name else type(inner).__name__
