"""RetryBudget: retries may be only a share of the calls in flight, so they cannot multiply
the load on a dependency that is already failing (Envoy's retry budget)."""

from __future__ import annotations

from toolkit.errors import ConfigurationError


class RetryBudget:
    """Retries in flight may be at most ``ratio`` of calls in flight, or ``minimum``.

    A call counts from its first attempt to its last; a retry from the moment it is granted
    (its backoff included) until its attempt ends. With every call failing, a 20 % budget
    bounds the attempts at about 1.2 per call whatever ``attempts`` says, while an isolated
    failure still gets its retries (``minimum``). One budget per process and per breaker (or
    per function without one); share one by passing the same object.

    Args:
        ratio: retries in flight / calls in flight, 0 to 1.
        minimum: retries always allowed in flight, however few calls there are.
    """

    __slots__ = ("active", "minimum", "ratio", "retrying")

    def __init__(self, ratio: float = 0.2, minimum: int = 3) -> None:
        if not 0 <= ratio <= 1:
            raise ConfigurationError(f"RetryBudget(ratio={ratio!r}): a share in [0, 1], e.g. 0.2")
        if minimum < 0:
            raise ConfigurationError(f"RetryBudget(minimum={minimum!r}): 0 or more, e.g. 3")
        self.ratio = ratio
        self.minimum = minimum
        self.active = 0
        self.retrying = 0

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, minimum={self.minimum}; "
            f"{self.retrying} retrying of {self.active} in flight)"
        )

    def try_retry(self) -> bool:
        """Take a retry slot if the budget has one."""
        if self.retrying < max(self.minimum, self.ratio * self.active):
            self.retrying += 1
            return True
        return False

    def release(self) -> None:
        """The retry's attempt ended (or it was abandoned)."""
        self.retrying -= 1
