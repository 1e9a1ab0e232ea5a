"""Concurrent requests against real servers: every request on a connection of its own, so
that a multi-process server spreads them over its workers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import httpx


async def burst(
    urls: Sequence[str], *, seconds: float = 60, headers: Mapping[str, str] | None = None
) -> list[httpx.Response]:
    """GET every URL at once, each on a new connection, each allowed ``seconds``; the
    responses in order."""
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=seconds, headers=headers) as client:
        return await asyncio.gather(*(client.get(url) for url in urls))
