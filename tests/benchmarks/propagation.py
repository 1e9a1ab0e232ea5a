"""How long a flag flip takes to reach every worker: ``python -m tests.benchmarks.propagation``.

One redis-server, one ``uvicorn --workers 4`` on it. Each flip is written by a store in this
process; each worker stamps the reload that applied it (``loaded_at``), so the delay is read
from the workers themselves, not from when a poll happened to reach them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from tests.integration.test_flags_fleet import WORKERS, ask_every_worker, env
from tests.support.servers import RedisServer, UvicornServer, require_binary
from toolkit.backends.redis import RedisBackend
from toolkit.flags import RATELIMIT, FlagStore


async def measure(base_url: str, redis_url: str, flips: int) -> list[float]:
    backend = RedisBackend(redis_url, timeout=1)
    store = FlagStore(backend)
    delays: list[float] = []
    try:
        # Warm up: every worker has served a request and applied one change (its first
        # reload pays for imports and connections; measured once, it took ~0.5 s).
        await ask_every_worker(base_url, WORKERS)
        await store.set(RATELIMIT, "on", by="bench")
        await asyncio.sleep(0.5)
        for flip in range(flips):
            variant = "off" if flip % 2 == 0 else "on"
            flipped = time.time()
            await store.set(RATELIMIT, variant, by="bench")
            await asyncio.sleep(0.1)
            answers = await ask_every_worker(base_url, WORKERS)
            if {a["variant"] for a in answers.values()} != {variant}:
                raise RuntimeError(f"flip {flip}: not every worker serves {variant}: {answers}")
            delays += [float(a["loaded_at"]) - flipped for a in answers.values()]  # type: ignore[arg-type]
    finally:
        await backend.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=50)
    args = parser.parse_args()
    redis = RedisServer(require_binary("redis-server"))
    redis.start()
    try:
        with UvicornServer("tests.apps.agent:app", env=env(redis.url), workers=WORKERS) as app:
            delays = sorted(asyncio.run(measure(app.base_url, redis.url, args.flips)))
    finally:
        redis.stop()
    p99 = delays[min(len(delays) - 1, round(0.99 * len(delays)))]
    print(
        f"flag propagation to {WORKERS} uvicorn workers, {args.flips} flips, "
        f"{len(delays)} worker applications: p50 {statistics.median(delays) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
