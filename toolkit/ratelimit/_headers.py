"""Rate-limit response fields and the 429 / 503 answers.

Fields follow draft-ietf-httpapi-ratelimit-headers (structured fields): ``RateLimit-Policy``
describes each limit (quota ``q``, window ``w`` in seconds) and ``RateLimit`` the one that
constrains this client now (remaining ``r``, seconds to reset ``t``). The legacy
``X-RateLimit-*`` trio is available as an option, its reset a Unix time as GitHub, slowapi and
flask-limiter send it. Bodies are RFC 9457 problem details (``toolkit._problem``), sent
straight to ASGI: a 429 is the answer most often sent under abuse.
"""

from __future__ import annotations

import math
import time

from starlette.types import Send

from toolkit._problem import QUOTA_EXCEEDED, REDUCED_CAPACITY, problem_body, retry_after_seconds
from toolkit.ratelimit.algorithms import Decision
from toolkit.ratelimit.policies import Policy
from toolkit.settings import HeaderStyle

OWN_HEADERS = frozenset(
    (
        b"ratelimit",
        b"ratelimit-policy",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"retry-after",
    )
)


def _sf_string(text: str) -> str:
    """An RFC 8941 string: quoted, with backslash and quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PolicyHeaders:
    """The fields of one policy, prepared once: only ``remaining`` and ``reset`` vary."""

    __slots__ = (
        "_amounts",
        "_ietf",
        "_items",
        "_legacy",
        "_policy_field",
        "_policy_header",
        "_prefixes",
    )

    def __init__(self, policy: Policy, style: HeaderStyle) -> None:
        windows = [int(item.get_expiry()) for item in policy.limits]
        if len(policy.limits) == 1:
            names = [policy.name]
        else:
            names = [f"{policy.name}/{w}s" for w in windows]
            if len(set(names)) < len(names):
                names = [f"{policy.name}/{i}" for i in range(len(names))]
        self._items = [_sf_string(name) for name in names]
        self._amounts = [item.amount for item in policy.limits]
        self._policy_field = ", ".join(
            f"{item};q={amount};w={window}"
            for item, amount, window in zip(self._items, self._amounts, windows, strict=True)
        ).encode("latin-1")
        self._prefixes = [f"{item};r=".encode("latin-1") for item in self._items]
        self._policy_header = (b"ratelimit-policy", self._policy_field)
        self._ietf = style in ("ietf", "both")
        self._legacy = style in ("legacy", "both")

    def fields(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        """The fields for a response governed by this policy."""
        # On a 429, t is the same instant as Retry-After (the draft asks for it); otherwise the
        # time until the limit is whole. Rounded up: a client never comes back too early.
        seconds = decision.retry_after if not decision.allowed else decision.reset_after
        reset = math.ceil(seconds)
        remaining = max(0, decision.remaining)
        fields: list[tuple[bytes, bytes]] = []
        if self._ietf:
            value = b"%b%d;t=%d" % (self._prefixes[decision.binding], remaining, reset)
            fields = [self._policy_header, (b"ratelimit", value)]
        if self._legacy:
            fields += [
                (b"x-ratelimit-limit", str(self._amounts[decision.binding]).encode()),
                (b"x-ratelimit-remaining", str(remaining).encode()),
                # The same moment as a Unix time, in whole seconds, rounded up likewise.
                (b"x-ratelimit-reset", str(math.ceil(time.time() + seconds)).encode()),
            ]
        return fields


async def send_rejection(
    send: Send, policy: Policy, decision: Decision, fields: list[tuple[bytes, bytes]]
) -> None:
    """Answer 429: the client spent its budget. ``Retry-After`` is never before the reset."""
    retry_after = retry_after_seconds(decision.retry_after)
    limit = policy.limits[decision.binding]
    body = problem_body(
        429,
        f"Rate limit {limit} of policy {policy.name!r} exceeded; retry in {retry_after} s.",
        QUOTA_EXCEEDED,
        {"violated-policies": [policy.name]},
    )
    await _send_problem(send, 429, body, [(b"retry-after", str(retry_after).encode()), *fields])


async def send_unavailable(send: Send, policy: Policy) -> None:
    """Answer 503: the policy fails closed and its storage is failing."""
    detail = f"Rate limit policy {policy.name!r} cannot be checked right now."
    body = problem_body(503, detail, REDUCED_CAPACITY)
    await _send_problem(send, 503, body, [(b"retry-after", b"1")])


async def _send_problem(
    send: Send, status: int, body: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *fields,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
