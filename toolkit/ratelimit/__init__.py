"""Rate limiting: a pure-ASGI middleware, its policies, keys and algorithms."""

from toolkit.identity import ClientAddress, KeyFunction
from toolkit.ratelimit.algorithms import Decision
from toolkit.ratelimit.middleware import RateLimitMiddleware
from toolkit.ratelimit.policies import Policy, RoutePolicy

__all__ = [
    "ClientAddress",
    "Decision",
    "KeyFunction",
    "Policy",
    "RateLimitMiddleware",
    "RoutePolicy",
]
