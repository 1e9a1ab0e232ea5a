"""On a real three-node Redis Cluster every algorithm works: multi-key calls never cross slots."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
import redis

from tests.support.asgi import call, http_scope, status_of
from tests.support.servers import require_binary, wait_until
from toolkit import RateLimitMiddleware
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus twins (port + 10000) are free too; so below 55536."""
    ports: list[int] = []
    for port in range(random.randrange(20000, 40000), 45000):
        if len(ports) == count:
            break
        if all(_free(p) for p in (port, port + 10000)):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    server = require_binary("redis-server")
    cli = require_binary("redis-cli")
    directory = tempfile.mkdtemp(prefix="toolkit-cluster-")
    ports = cluster_ports(3)
    processes = [
        subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:

        def answers(port: int) -> bool:
            with redis.Redis(port=port) as client:
                return bool(client.ping())

        for port in ports:
            wait_until(lambda p=port: answers(p), 10, f"node {port}")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )

        def ready() -> bool:
            with redis.Redis(port=ports[0]) as client:
                return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")

        wait_until(ready, 15, "cluster state ok")
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


async def ok(scope, receive, send):  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    "algorithm", ["gcra", "fixed-window", "moving-window", "sliding-window-counter"]
)
async def test_every_algorithm_runs_on_redis_cluster(cluster_url: str, algorithm: str) -> None:
    backend = RedisBackend(cluster_url, timeout=2, key_prefix=f"cluster-{algorithm}")
    app = RateLimitMiddleware(
        ok, limit="3/minute;100/hour", caller="api_key", backend=backend, algorithm=algorithm
    )
    # Many callers spread their keys over every slot range, so every node is exercised.
    for user in range(30):
        headers = [("x-api-key", f"user-{user}")]
        statuses = [status_of(await call(app, http_scope("/", headers=headers))) for _ in range(4)]
        assert statuses == [200, 200, 200, 429], (user, statuses)
    await backend.close()


async def test_cache_entries_tags_and_invalidation_clock_run_on_redis_cluster(
    cluster_url: str,
) -> None:
    """Entries spread over the cluster's nodes; every cache script keeps to one slot, so
    writes, the refusal of a write computed before an invalidation, and invalidation by tag
    all work there."""
    backend = RedisBackend(cluster_url, timeout=2, key_prefix="cluster-cache")
    store = CacheStore(backend)
    try:
        items = [(f"entry-{i}", f"v{i}".encode()) for i in range(100)]
        before = await store.generation()
        assert await store.set_many(items, 60, ["catalog", "all"], before) == 100
        assert await store.get_many([k for k, _ in items]) == [v for _, v in items]
        assert await store.invalidate(["catalog"]) == 100
        assert await store.get_many([k for k, _ in items[:3]]) == [None] * 3
        assert await store.set_many(items, 60, ["catalog"], before) == 0
        assert await store.set_many(items, 60, ["catalog"], await store.generation()) == 100
    finally:
        await backend.close()
