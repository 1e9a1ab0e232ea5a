"""Which policy governs a request: exempt paths, per-route policies, then the default."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field

from limits import RateLimitItem

from toolkit._deprecated import renamed_argument, warn_renamed
from toolkit._paths import PathMatcher, compile_pattern, is_literal, literal_keys
from toolkit.backends import GcraLimit
from toolkit.errors import ConfigurationError
from toolkit.identity import CallerResolver
from toolkit.settings import FailureMode
from toolkit.settings._values import cost_problem, parse_rate_limits, rate_limit_problem

DEFAULT_POLICY = "default"


@dataclass(frozen=True, slots=True, eq=False)  # identity hash: a cheap dict key per request
class Policy:
    """A named budget: one or more limits spent together, and what to do when storage fails.

    Attributes:
        name: the policy's name in metrics, spans and headers; requests of one policy and one
            caller share a budget, so routes that name the same policy share it too.
        limits: parsed limit items; a request passes only if every one has room.
        cost: units each request consumes.
        caller: who is limited; None means the middleware's default caller. ``key=`` is its
            old name, deprecated.
        failure: ``open`` lets requests through when the backend fails; ``closed`` answers 503.
        shadow: decide and record, but never reject.
        methods: only these HTTP methods (upper case); all when None.
    """

    name: str
    limits: tuple[RateLimitItem, ...]
    cost: int = 1
    caller: CallerResolver[str] | None = None
    failure: FailureMode = "open"
    shadow: bool = False
    methods: frozenset[str] | None = None
    gcra_limits: tuple[GcraLimit, ...] = field(init=False, repr=False, compare=False)
    limit_ids: tuple[str, ...] = field(init=False, repr=False, compare=False)
    key: InitVar[CallerResolver[str] | None] = None

    def __post_init__(self, key: CallerResolver[str] | None) -> None:
        if key is not None:
            object.__setattr__(
                self, "caller", renamed_argument("Policy", "key", key, "caller", self.caller)
            )
        if not self.limits:
            raise ConfigurationError(f"policy {self.name!r} has no limit")
        problems = [rate_limit_problem(item) for item in self.limits]
        problems.append(cost_problem(self.cost, self.limits))
        for problem in problems:
            if problem is not None:
                raise ConfigurationError(f"policy {self.name!r}: {problem}")
        object.__setattr__(
            self, "gcra_limits", tuple(GcraLimit.of(i.amount, i.get_expiry()) for i in self.limits)
        )
        # Part of the storage key: changing a limit starts a fresh budget.
        object.__setattr__(
            self,
            "limit_ids",
            tuple(f"{i.amount}/{i.multiples}{i.GRANULARITY.name}" for i in self.limits),
        )

    @classmethod
    def parse(cls, name: str, limit: str, **options: object) -> Policy:
        """A policy from a limits string such as ``"60/minute;1000/day"``."""
        try:
            items = parse_rate_limits(limit)
        except ValueError as exc:
            raise ConfigurationError(f"policy {name!r}: {exc}") from None
        return cls(name, items, **options)  # type: ignore[arg-type]


def _deprecated_key(policy: Policy) -> CallerResolver[str] | None:
    warn_renamed("Policy.key", "Policy.caller")
    return policy.caller


# Read as well as given: the old name of Policy.caller (the InitVar above takes it given).
setattr(Policy, "key", property(_deprecated_key))  # noqa: B010 - over the InitVar's default


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """A policy and the route template or path pattern it governs."""

    pattern: str
    policy: Policy


class PolicyTable:
    """Finds the policy of a request in the order: exempt, literal routes, patterns (in the
    order given), the default. Built once; a lookup is a dict access for literal paths."""

    __slots__ = ("_default", "_exempt_patterns", "_literal", "_patterns", "policies")

    def __init__(
        self,
        default: Policy | None,
        routes: Sequence[RoutePolicy],
        exempt: Iterable[str],
    ) -> None:
        self._default = default
        exempted = PathMatcher(exempt)
        self._exempt_patterns = [regex for regex, _ in exempted.patterns]
        literal: dict[str, list[Policy]] = {}
        self._patterns: list[tuple[re.Pattern[str], Policy]] = []
        for route in routes:
            if is_literal(route.pattern):
                for key in literal_keys(route.pattern):
                    literal.setdefault(key, []).append(route.policy)
            else:
                self._patterns.append((compile_pattern(route.pattern), route.policy))
        # Literal routes and literal exemptions (None) in one dict: one lookup per request.
        self._literal: dict[str, list[Policy] | None] = {
            **literal,
            **dict.fromkeys(exempted.literal),
        }
        every = ([default] if default else []) + [route.policy for route in routes]
        self.policies: tuple[Policy, ...] = tuple(dict.fromkeys(every))

    def match(self, method: str, path: str) -> Policy | None:
        """The policy for this request, or None when it is exempt or nothing applies."""
        found = self._literal.get(path, ())
        if found is None:  # exempt
            return None
        for regex in self._exempt_patterns:
            if regex.match(path):
                return None
        for policy in found:
            if policy.methods is None or method in policy.methods:
                return policy
        for regex, policy in self._patterns:
            if (policy.methods is None or method in policy.methods) and regex.match(path):
                return policy
        return self._default
