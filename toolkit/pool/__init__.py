"""Agent pools: build expensive objects ahead, lend them per request, close what goes bad.

pool = toolkit.AgentPool(make_agent, mode="shared")     # one Agent per key, shared
toolkit.install(app, pools=[pool])                      # built before the first request

async with pool.acquire("gpt-4o") as agent: ...

@toolkit.pooled(pool)
async def answer(agent: Agent, question: str) -> str: ...
"""

from __future__ import annotations

from toolkit.pool._options import DEFAULTS, MODE_DEFAULT
from toolkit.pool.decorator import pooled
from toolkit.pool.lease import Lease
from toolkit.pool.pool import AgentPool, PoolStats

__all__ = ["DEFAULTS", "MODE_DEFAULT", "AgentPool", "Lease", "PoolStats", "pooled"]
