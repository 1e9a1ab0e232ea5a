"""Agent pools: build expensive objects ahead, lend them per request, close what goes bad.

pool = toolkit.AgentPool(make_agent, mode="shared")     # one Agent per key, shared
toolkit.install(app, pools=[pool])                      # built before the first request

async with pool.acquire("gpt-4o") as agent: ...

@toolkit.pooled(pool)
async def answer(agent: Agent, question: str) -> str: ...
"""

from __future__ import annotations

from toolkit._deprecated import renamed_attributes as _renamed_attributes
from toolkit.pool._options import OLD_NAMES as _OLD_NAMES
from toolkit.pool.decorator import pooled
from toolkit.pool.lease import Lease
from toolkit.pool.pool import AgentPool, PoolStats

__all__ = ["AgentPool", "Lease", "PoolStats", "pooled"]

__getattr__ = _renamed_attributes(__name__, _OLD_NAMES)  # MODE_DEFAULT, DEFAULTS: deprecated
