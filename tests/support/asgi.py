"""Drive an ASGI app directly and keep every message it sends.

Requests reach the app under test the way the current :class:`Serving` says: as the app
itself, under a root path given to the server, or with the app mounted in a parent app. The
``served`` fixture (tests/unit/conftest.py) runs a test each of the three ways; every helper
here (``http_scope``, ``call``, ``http_client``) follows it, so a test written for the plain app
runs unchanged under the other two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Message


@dataclass(frozen=True)
class Serving:
    """How requests reach the app under test.

    ``root_path``: the server was given a root path (``uvicorn --root-path /api``, behind a
    proxy that strips ``/api``): each request's ``path`` keeps the prefix and ``root_path``
    names it, as uvicorn sends them. ``mount``: the app is mounted at that prefix of a parent
    Starlette app (``Mount("/v1", app)``), which sends it ``/v1/...`` under ``root_path``
    ``/v1``. The app's own paths (``/health``) are the same in all three.
    """

    name: str
    root_path: str = ""
    mount: str = ""

    @property
    def prefix(self) -> str:
        """What a client puts before the app's own paths."""
        return self.root_path + self.mount

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """What the server runs: ``app``, or the parent that mounts it."""
        if not self.mount:
            return app
        return Starlette(routes=[Mount(self.mount, app=app)])


PLAIN = Serving("plain")
ROOT_PATH = Serving("root_path", root_path="/api")
MOUNTED = Serving("mounted", mount="/v1")
SERVINGS = (PLAIN, ROOT_PATH, MOUNTED)

_current = [PLAIN]


def current_serving() -> Serving:
    """How the current test's requests reach the app."""
    return _current[-1]


@contextmanager
def served_as(way: Serving) -> Iterator[Serving]:
    _current.append(way)
    try:
        yield way
    finally:
        _current.pop()


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
) -> dict[str, Any]:
    """The scope the server sends for the app's ``path``, the current way of serving."""
    way = current_serving()
    path = way.prefix + path
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": way.root_path,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
        "server": ("testserver", 80),
    }


async def call(app: ASGIApp, scope: dict[str, Any]) -> list[Message]:
    """Run one request through ``app`` (served the current way); the messages it sent, in
    order."""
    sent: list[Message] = []
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if request_sent:
            return {"type": "http.disconnect"}
        request_sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await current_serving().wrap(app)(scope, receive, send)
    return sent


def http_client(
    app: ASGIApp, *, peer: tuple[str, int] = ("127.0.0.1", 123), **options: Any
) -> httpx.AsyncClient:
    """An HTTP client of ``app`` served the current way: ``client.get("/health")`` reaches
    the app's ``/health``. The app's lifespan is not run (``lifespan(app)`` does)."""
    way = current_serving()
    transport = httpx.ASGITransport(app=way.wrap(app), root_path=way.root_path, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://t" + way.prefix, **options)


def status_of(messages: list[Message]) -> int:
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1, f"expected one http.response.start, got {len(starts)}"
    status: int = starts[0]["status"]
    return status


def headers_of(messages: list[Message]) -> list[tuple[str, str]]:
    start = next(m for m in messages if m["type"] == "http.response.start")
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` started (its lifespan run around the block) and an HTTP client of it, served
    the current way."""
    async with lifespan(app), http_client(app) as http:
        yield http


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan around the block, as a server would. A parent app does
    not run the lifespan of the apps it mounts; a mounted app's must be run like this (the
    parent's lifespan entering it), whichever way it is served."""
    stopping = anyio.Event()
    sent: list[str] = []
    started = anyio.Event()
    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "lifespan.startup"}
        await stopping.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"].startswith("lifespan.startup"):
            started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with anyio.create_task_group() as group:
        group.start_soon(app, scope, receive, send)
        await started.wait()
        assert sent == ["lifespan.startup.complete"], sent
        yield
        stopping.set()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent
