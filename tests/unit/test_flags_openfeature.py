"""OpenFeature both ways: the app's client reads toolkit flags; the toolkit reads the app's."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import toolkit
from toolkit.flags import RATELIMIT, FlagStore, declare, override
from toolkit.flags.openfeature import OpenFeatureFlags, ToolkitProvider

pytestmark = pytest.mark.anyio

declare("of.new-agent")
declare("of.model", variants={"small": "gpt-small", "large": "gpt-large"}, default="small")


@pytest.fixture(autouse=True)
def _clean_openfeature() -> Iterator[None]:
    yield
    api.clear_providers()


async def test_an_openfeature_client_reads_toolkit_flags() -> None:
    store = FlagStore()
    api.set_provider(ToolkitProvider(store))
    client = api.get_client()
    await store.set("of.model", "large", by="ops")
    details = client.get_string_details("of.model", "none")
    assert (details.value, details.variant, details.reason) == ("gpt-large", "large", "STATIC")
    assert client.get_boolean_value("of.new-agent", True) is False
    await store.rollout("of.new-agent", "on", 50, by="ops")
    users = [f"user-{i}" for i in range(2000)]
    on = sum(
        client.get_boolean_value("of.new-agent", False, EvaluationContext(targeting_key=u))
        for u in users
    )
    assert 900 < on < 1100
    # The same subject gets the same answer from the store directly: one bucketing.
    assert client.get_boolean_value(
        "of.new-agent", False, EvaluationContext(targeting_key="user-7")
    ) == store.is_enabled("of.new-agent", subject="user-7")


async def test_unknown_flags_and_wrong_types_fall_back_with_an_error_code() -> None:
    api.set_provider(ToolkitProvider(FlagStore()))
    client = api.get_client()
    missing = client.get_boolean_details("of.nobody", True)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    mismatch = client.get_integer_details("of.model", 3)
    assert (mismatch.value, mismatch.error_code) == (3, ErrorCode.TYPE_MISMATCH)


async def test_the_toolkit_takes_its_flags_from_the_apps_openfeature_provider() -> None:
    """With flags.source = openfeature, the rate limiter's kill switch comes from the app's
    provider (here the SDK's in-memory one)."""
    api.set_provider(
        InMemoryProvider(
            {
                RATELIMIT: InMemoryFlag("off", {"on": "on", "off": "off", "shadow": "shadow"}),
                "of.new-agent": InMemoryFlag("on", {"on": True, "off": False}),
            }
        )
    )
    flags = OpenFeatureFlags()
    assert flags.variant(RATELIMIT) == "off"
    assert flags.is_enabled("of.new-agent")

    app = FastAPI()

    @app.get("/chat")
    async def chat() -> dict[str, str]:
        return {"answer": "hi"}

    toolkit.install(
        app,
        toolkit.ToolkitSettings(ratelimit={"limit": "1/minute"}, flags={"source": "openfeature"}),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert [(await c.get("/chat")).status_code for _ in range(3)] == [200, 200, 200]


async def test_test_overrides_also_reach_the_openfeature_provider() -> None:
    api.set_provider(ToolkitProvider(FlagStore()))
    with override({"of.new-agent": True}):
        assert api.get_client().get_boolean_value("of.new-agent", False) is True
