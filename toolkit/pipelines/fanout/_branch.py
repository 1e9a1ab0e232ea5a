"""One branch of a fan-out (:func:`branch`) and what it and the whole fan-out ended with
(:class:`BranchResult`, :class:`GatherResult`)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from toolkit._duration import parse_seconds
from toolkit.errors import ConfigurationError

T = TypeVar("T")

BranchOutcome = Literal["ok", "fallback", "failed", "timeout", "cancelled"]
"""How a branch ended (``names.BRANCH_OUTCOMES`` says what each means)."""

ANSWERED: Final[frozenset[str]] = frozenset({"ok", "fallback"})
FAILED: Final[frozenset[str]] = frozenset({"failed", "timeout"})


@dataclass(frozen=True, slots=True)
class Branch(Generic[T]):
    """One call of a fan-out, with its name, deadline (seconds; None: the fan-out's) and
    fallback (None: none); build it with :func:`branch` and pass it to
    :func:`~toolkit.gather`."""

    name: str
    function: Callable[..., Awaitable[T]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deadline: float | None
    fallback: Any

    def __repr__(self) -> str:
        return f"branch({self.name!r}, {getattr(self.function, '__qualname__', self.function)})"


def branch(
    name: str,
    function: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    deadline: float | str | None = None,
    fallback: Any = None,
    **kwargs: Any,
) -> Branch[T]:
    """A branch of :func:`~toolkit.gather`: ``await function(*args, **kwargs)``.

        toolkit.branch("vector", vector_store.search, query, deadline="300ms", fallback=[])

    Args:
        name: the branch's name: its key in the result, its span (``toolkit.branch {name}``)
            and, bounded, its metric label.
        function: an async function (``@toolkit.resilient`` ones included: their timeout is
            bounded by the branch's deadline).
        args / kwargs: what ``function`` is called with (``deadline`` and ``fallback`` are
            this function's: pass a ``functools.partial`` for a function that takes those).
        deadline: seconds (or ``"300ms"``) this branch may take; the fan-out's deadline and
            the current one (the request's) still hold. None: only those.
        fallback: a value, or an async function taking the same arguments, answering when the
            branch fails or times out (outcome ``fallback``). An async fallback runs in what
            is left of the fan-out's deadline. None: no fallback (for a None answer, an async
            function returning None).

    Raises:
        ConfigurationError: an empty name, a function that is not callable, a deadline that
            is not a positive duration, a sync callable as fallback.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"branch({name!r}): a name, e.g. branch('vector', search, q)")
    if not callable(function):
        raise ConfigurationError(
            f"branch({name!r}, {function!r}): an async function, e.g. branch('vector', search, q)"
        )
    seconds: float | None = None
    if deadline is not None:
        try:
            seconds = parse_seconds(deadline)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"branch({name!r}, deadline={deadline!r}): {exc}; e.g. '300ms'"
            ) from None
        if seconds <= 0:
            raise ConfigurationError(
                f"branch({name!r}, deadline={deadline!r}): positive, e.g. '300ms'"
            )
    if callable(fallback) and not inspect.iscoroutinefunction(fallback):
        raise ConfigurationError(
            f"branch({name!r}, fallback={fallback!r}): a value, or an async function taking "
            "the branch's arguments"
        )
    return Branch(name, function, args, kwargs, seconds, fallback)


@dataclass(frozen=True, slots=True)
class BranchResult(Generic[T]):
    """How one branch ended.

    Attributes:
        name: the branch's name.
        outcome: ``ok``, ``fallback``, ``failed``, ``timeout`` or ``cancelled``.
        value: its answer (``ok``) or its fallback's (``fallback``); None otherwise.
        error: what it raised (``failed``, and ``fallback`` after a failure), the
            ``TimeoutError`` of ``timeout``; None otherwise.
        duration: seconds from its start to its outcome, its fallback included.
    """

    name: str
    outcome: BranchOutcome
    value: T | None = None
    error: BaseException | None = None
    duration: float = 0.0

    @property
    def answered(self) -> bool:
        """Whether it has a value: ``ok`` or ``fallback``."""
        return self.outcome in ANSWERED


class GatherResult:
    """What :func:`~toolkit.gather` returns: every branch's :class:`BranchResult`, in the
    order the branches were given.

        result["vector"].outcome     # "ok" | "fallback" | "failed" | "timeout" | "cancelled"
        result.values()              # {name: value} of the branches that answered
        result.failed                # names of the branches that failed or timed out
    """

    __slots__ = ("_branches",)

    def __init__(self, branches: Mapping[str, BranchResult[Any]]) -> None:
        self._branches = dict(branches)

    def __getitem__(self, name: str) -> BranchResult[Any]:
        return self._branches[name]

    def __contains__(self, name: object) -> bool:
        return name in self._branches

    def __iter__(self) -> Iterator[str]:
        return iter(self._branches)

    def __len__(self) -> int:
        return len(self._branches)

    def __repr__(self) -> str:
        outcomes = ", ".join(f"{name}={r.outcome}" for name, r in self._branches.items())
        return f"GatherResult({outcomes})"

    def values(self) -> dict[str, Any]:
        """``{name: value}`` of the branches that answered (``ok`` or ``fallback``)."""
        return {name: r.value for name, r in self._branches.items() if r.outcome in ANSWERED}

    def results(self) -> dict[str, BranchResult[Any]]:
        """``{name: BranchResult}`` of every branch."""
        return dict(self._branches)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the branches that failed or timed out (with no fallback that answered)."""
        return tuple(name for name, r in self._branches.items() if r.outcome in FAILED)

    @property
    def cancelled(self) -> tuple[str, ...]:
        """Names of the branches cancelled by ``first=`` or ``enough=``."""
        return tuple(name for name, r in self._branches.items() if r.outcome == "cancelled")
