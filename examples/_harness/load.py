"""A short load against a server: clients that loop until a deadline, and what they saw."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

Client = Callable[[httpx.AsyncClient, float], Coroutine[Any, Any, None]]
"""One simulated client: sends requests with the shared ``httpx`` client until the deadline
(``time.monotonic()`` seconds), recording them in a ``Traffic`` of its own choosing."""


@dataclass
class Traffic:
    """What one kind of request saw: a status (0: no response) and a latency per request."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def record(self, status: int, latency: float) -> None:
        self.statuses.append(status)
        self.latencies.append(latency)

    @property
    def requests(self) -> int:
        return len(self.statuses)

    @property
    def ok(self) -> int:
        return sum(200 <= status < 300 for status in self.statuses)

    @property
    def errors(self) -> int:
        return self.requests - self.ok

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds (NaN when there are none)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)

    @property
    def max(self) -> float:
        return max(self.latencies, default=math.nan)

    def throughput(self, seconds: float) -> float:
        """Answered (2xx) requests a second over ``seconds``."""
        return self.ok / seconds if seconds > 0 else 0.0


async def send(
    client: httpx.AsyncClient, method: str, path: str, out: Traffic, **request: Any
) -> httpx.Response | None:
    """``method path`` timed into ``out``; None (status 0) when no response came."""
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **request)
    except httpx.HTTPError:
        out.record(0, time.perf_counter() - started)
        return None
    out.record(response.status_code, time.perf_counter() - started)
    return response


def closed_loop(
    count: int, request: Callable[[httpx.AsyncClient, int], Awaitable[Any]]
) -> list[Client]:
    """``count`` clients, each sending ``request(client, its number)`` again as soon as the last
    one was answered: a fixed concurrency, the throughput the server can give."""

    def client(number: int) -> Client:
        async def loop(http: httpx.AsyncClient, deadline: float) -> None:
            while time.monotonic() < deadline:
                await request(http, number)

        return loop

    return [client(number) for number in range(count)]


def every(interval: float, request: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Client:
    """One client sending ``request`` every ``interval`` seconds (a probe, a steady user)."""

    async def loop(http: httpx.AsyncClient, deadline: float) -> None:
        next_send = time.monotonic()
        while next_send < deadline:
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
            next_send += interval
            await request(http)

    return loop


def probe(interval: float, path: str, out: Traffic) -> Client:
    """A client that ``GET``s ``path`` every ``interval`` seconds and records each answer's
    delay from when it was due, not from when it was sent: a probe stuck behind a blocked
    loop also delays the probes due meanwhile, and they count (no coordinated omission)."""

    async def loop(http: httpx.AsyncClient, deadline: float) -> None:
        due = time.monotonic()
        while due < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                status = (await http.get(path)).status_code
            except httpx.HTTPError:
                status = 0
            answered = time.monotonic()
            while due <= answered and due < deadline:  # every probe due by now waited this long
                out.record(status, answered - due)
                due += interval

    return loop


def drive(
    base_url: str, duration: float, clients: Sequence[Client], *, timeout: float = 10
) -> None:
    """Run ``clients`` against ``base_url`` for ``duration`` seconds, in this process. Requests in
    flight at the deadline are waited for, not cancelled, so the server counted exactly the
    requests the clients recorded."""

    async def run() -> None:
        deadline = time.monotonic() + duration
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=timeout) as http,
            asyncio.TaskGroup() as group,
        ):
            for client in clients:
                group.create_task(client(http, deadline))

    asyncio.run(run())
