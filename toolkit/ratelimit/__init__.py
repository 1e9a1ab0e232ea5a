"""Rate limiting: a pure-ASGI middleware, its policies, callers and algorithms."""

from typing import TYPE_CHECKING, TypeAlias

from toolkit._deprecated import renamed_attributes
from toolkit.identity import CallerFunction, ClientAddress
from toolkit.ratelimit.algorithms import Decision
from toolkit.ratelimit.middleware import RateLimitMiddleware
from toolkit.ratelimit.policies import Policy, RoutePolicy

__all__ = [
    "CallerFunction",
    "ClientAddress",
    "Decision",
    "Policy",
    "RateLimitMiddleware",
    "RoutePolicy",
]

if TYPE_CHECKING:  # the old name, deprecated: a warning at run time
    KeyFunction: TypeAlias = CallerFunction
else:
    __getattr__ = renamed_attributes(__name__, {"KeyFunction": ("CallerFunction", CallerFunction)})
