"""The toolkit never draws from the global ``random`` stream: an app that seeds it for a
reproducible run gets the same sequence with the toolkit as without."""

from __future__ import annotations

import random

import pytest
from fastapi import FastAPI

import toolkit
from tests.support.asgi import http_client, lifespan

pytestmark = pytest.mark.anyio


async def test_spans_jitter_and_requests_leave_the_global_random_stream_alone() -> None:
    app = FastAPI()

    @app.get("/chat")
    @toolkit.traced_agent("support")
    async def chat() -> dict[str, str]:
        with toolkit.step("retrieval"):
            return {"answer": "hi"}

    installed = toolkit.install(app, toolkit.ToolkitSettings(ratelimit={"limit": "2/minute"}))
    async with lifespan(app), http_client(app) as client:
        random.seed(7)
        state = random.getstate()
        answers = [(await client.get("/chat")).status_code for _ in range(4)]
        assert random.getstate() == state
    assert answers == [200, 200, 429, 429]
    assert installed.status is not None  # spans were made: the status board saw the route
    assert installed.status.snapshot(traces=0)["routes"]
