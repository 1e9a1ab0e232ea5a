"""Rate limiting: a pure-ASGI middleware, its policies, callers and algorithms."""

import typing

from toolkit import _deprecated
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

if typing.TYPE_CHECKING:  # the old name, deprecated: a warning at run time
    KeyFunction: typing.TypeAlias = CallerFunction
else:
    __getattr__ = _deprecated.renamed_attributes(
        __name__, {"KeyFunction": ("CallerFunction", CallerFunction)}
    )
