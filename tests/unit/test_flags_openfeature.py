"""OpenFeature both ways: the app's client reads toolkit flags; the toolkit reads the app's.

The provider tests follow the evaluation requirements of the OpenFeature specification
(section 2, "Provider", and 1.4.10-1.4.11 for what a client must never do), cited by number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import toolkit
from tests.support.servers import free_port
from toolkit.backends.redis import RedisBackend
from toolkit.flags import (
    CACHE_FUNCTION,
    RATELIMIT,
    RESILIENCE,
    FlagStore,
    current_flags,
    declare,
    override,
    set_current_flags,
)
from toolkit.flags.openfeature import OpenFeatureFlags, ToolkitProvider

pytestmark = pytest.mark.anyio

declare("of.new-agent")
declare("of.model", variants={"small": "gpt-small", "large": "gpt-large"}, default="small")
declare("of.retries", variants={"few": 1, "many": 5}, default="few")
declare("of.temperature", variants={"cold": 0.1, "warm": 0.9}, default="warm")
declare("of.whole", variants={"one": 1, "more": 2.5}, default="one")
declare("of.limits", variants={"tight": {"rpm": 10}, "loose": {"rpm": 100}}, default="tight")

GETTERS = ("boolean", "string", "integer", "float", "object")
# flag -> (the getter of its type, its declared default variant, that variant's value)
TYPED: dict[str, tuple[str, str, Any]] = {
    "of.new-agent": ("boolean", "off", False),
    "of.model": ("string", "small", "gpt-small"),
    "of.retries": ("integer", "few", 1),
    "of.temperature": ("float", "warm", 0.9),
    "of.limits": ("object", "tight", {"rpm": 10}),
}
CALLER_DEFAULTS: dict[str, Any] = {
    "boolean": True,
    "string": "caller",
    "integer": 42,
    "float": 4.2,
    "object": {"caller": True},
}


def details(getter: str, key: str, context: EvaluationContext | None = None) -> Any:
    client = api.get_client()
    return getattr(client, f"get_{getter}_details")(key, CALLER_DEFAULTS[getter], context)


@pytest.fixture(autouse=True)
def _clean_openfeature() -> Iterator[None]:
    yield
    api.clear_providers()
    set_current_flags(None)  # install(flags.source=openfeature) set it for the process


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
    ) == store.is_enabled("of.new-agent", caller="user-7")


def test_openfeature_provider_metadata_names_it() -> None:
    """2.1.1: the provider's metadata has a string name."""
    assert ToolkitProvider(FlagStore()).get_metadata().name == "agent-server-toolkit"


@pytest.mark.parametrize("key", sorted(TYPED))
def test_openfeature_provider_resolves_each_type_with_value_variant_and_no_error(key: str) -> None:
    """2.2.1-2.2.4, 2.2.6, 2.3.2: the getter of a flag's type answers its value and variant,
    with no error code and no error message."""
    api.set_provider(ToolkitProvider(FlagStore()))
    getter, variant, value = TYPED[key]
    answer = details(getter, key)
    assert (answer.value, answer.variant) == (value, variant)
    assert (answer.error_code, answer.error_message) == (None, None)


@pytest.mark.parametrize(
    ("key", "getter"),
    [
        (key, getter)
        for key, (own, _, _) in sorted(TYPED.items())
        for getter in GETTERS
        # an integer is a number to the float getter too (tested below)
        if getter != own and (own, getter) != ("integer", "float")
    ],
)
def test_openfeature_provider_answers_a_wrong_type_with_the_callers_default_and_type_mismatch(
    key: str, getter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """2.2.7, 1.4.10, 1.4.11: every getter of another type gets TYPE_MISMATCH and the caller's
    default (a boolean is not an integer), and nothing raises or logs on the way."""
    api.set_provider(ToolkitProvider(FlagStore()))
    with caplog.at_level(logging.DEBUG):
        answer = details(getter, key)
    assert answer.value == CALLER_DEFAULTS[getter]
    assert (answer.error_code, answer.reason) == (ErrorCode.TYPE_MISMATCH, Reason.ERROR)
    assert key in (answer.error_message or "")
    assert caplog.records == []


def test_openfeature_provider_reads_an_integer_flag_as_a_float() -> None:
    """2.2.2.1 (numeric): the float getter reads integer values, as numbers."""
    api.set_provider(ToolkitProvider(FlagStore()))
    assert (details("float", "of.whole").value, details("float", "of.retries").value) == (1.0, 1.0)
    assert details("integer", "of.whole").value == 1  # its variant's value is an integer


async def test_openfeature_provider_reads_the_ratelimit_kill_switch_as_a_string() -> None:
    """All three states of the rate limiter's switch read through one getter, the string one."""
    store = FlagStore()
    api.set_provider(ToolkitProvider(store))
    seen = []
    for variant in ("on", "shadow", "off"):
        await store.set(RATELIMIT, variant, by="ops")
        answer = details("string", RATELIMIT)
        seen.append((answer.value, answer.variant, answer.error_code))
    assert seen == [("on", "on", None), ("shadow", "shadow", None), ("off", "off", None)]


async def test_openfeature_provider_reasons_are_static_split_and_stale() -> None:
    """2.2.5: the declared default and an operator's choice are STATIC (no dynamic
    evaluation), a rollout SPLIT, a store that cannot reach its backend STALE; the toolkit's
    own reason rides in the flag metadata (2.2.9, 2.2.10)."""
    store = FlagStore()
    api.set_provider(ToolkitProvider(store))
    declared = details("string", "of.model")
    assert (declared.reason, declared.flag_metadata) == (
        Reason.STATIC,
        {"toolkit.reason": "default"},
    )
    await store.set("of.model", "large", by="ops")
    assert details("string", "of.model").reason == Reason.STATIC
    await store.rollout("of.model", "small", 50, by="ops")
    context = EvaluationContext(targeting_key="user-1")
    assert details("string", "of.model", context).reason == Reason.SPLIT

    unreachable = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    stale = FlagStore(unreachable)
    await stale.start()
    try:
        api.set_provider(ToolkitProvider(stale))
        answer = details("boolean", "of.new-agent")
        assert (answer.value, answer.reason) == (False, Reason.STALE)
    finally:
        await stale.stop()
        await unreachable.close()


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


async def test_every_entry_point_asks_the_apps_provider_under_the_openfeature_source() -> None:
    """Decorators and the module-level questions take no ``flags=`` from install(): they ask
    the current source, which flags.source = openfeature makes the app's provider."""
    api.set_provider(
        InMemoryProvider(
            {
                CACHE_FUNCTION: InMemoryFlag("off", {"on": True, "off": False}),
                RESILIENCE: InMemoryFlag("off", {"on": True, "off": False}),
                "of.new-agent": InMemoryFlag("on", {"on": True, "off": False}),
            }
        )
    )
    toolkit.install(FastAPI(), toolkit.ToolkitSettings(flags={"source": "openfeature"}))
    assert isinstance(current_flags(), OpenFeatureFlags)
    assert toolkit.flags.is_enabled("of.new-agent")

    calls: list[str] = []

    @toolkit.cached(ttl="1m")
    async def answer(question: str) -> str:
        calls.append(question)
        return question.upper()

    async def fallback() -> str:
        return "fallback"

    @toolkit.resilient(fallback=fallback)
    async def flaky() -> str:
        raise ConnectionError("provider down")

    @toolkit.feature("of.new-agent", fallback=lambda: "old")
    def pick() -> str:
        return "new"

    assert [await answer("hi"), await answer("hi")] == ["HI", "HI"]
    assert calls == ["hi", "hi"]  # the provider switched the function cache off
    with pytest.raises(ConnectionError):  # and resilience: no fallback
        await flaky()
    assert pick() == "new"
    with override({CACHE_FUNCTION: True, "of.new-agent": False}):  # tests' overrides win
        assert [await answer("yo"), await answer("yo")] == ["YO", "YO"]
        assert calls == ["hi", "hi", "yo"]
        assert pick() == "old"

    toolkit.install(FastAPI())  # the toolkit source again
    assert isinstance(current_flags(), FlagStore)


async def test_test_overrides_also_reach_the_openfeature_provider() -> None:
    api.set_provider(ToolkitProvider(FlagStore()))
    with override({"of.new-agent": True}):
        assert api.get_client().get_boolean_value("of.new-agent", False) is True


class _AnsweringProvider(AbstractProvider):
    """A provider that answers every string and integer question with one fixed resolution,
    as a remote flag system would."""

    def __init__(self, resolution: FlagResolutionDetails[Any]) -> None:
        super().__init__()
        self.resolution = resolution
        self.asked: list[str] = []

    def get_metadata(self) -> Metadata:
        return Metadata(name="remote")

    def _answer(self, getter: str) -> Any:
        self.asked.append(getter)
        return self.resolution

    def resolve_boolean_details(
        self, flag_key: str, default_value: Any, evaluation_context: Any = None
    ) -> Any:
        return self._answer("boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: Any, evaluation_context: Any = None
    ) -> Any:
        return self._answer("string")

    def resolve_integer_details(
        self, flag_key: str, default_value: Any, evaluation_context: Any = None
    ) -> Any:
        return self._answer("integer")

    def resolve_float_details(
        self, flag_key: str, default_value: Any, evaluation_context: Any = None
    ) -> Any:
        return self._answer("float")

    def resolve_object_details(
        self, flag_key: str, default_value: Any, evaluation_context: Any = None
    ) -> Any:
        return self._answer("object")


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [
        # The provider names the variant: it wins, and its reason is kept.
        (FlagResolutionDetails("gpt-large", variant="large", reason="STATIC"), ("large", "static")),
        # A variant name of the provider's own, but a value the flag has: found by value.
        (FlagResolutionDetails("gpt-large", variant="v2", reason="SPLIT"), ("large", "split")),
        # A value the flag does not have: the declared default, as an error.
        (FlagResolutionDetails("gpt-huge", variant="huge", reason="STATIC"), ("small", "error")),
        # An error code: the declared default, whatever the value.
        (
            FlagResolutionDetails("gpt-large", ErrorCode.GENERAL, variant="large", reason="ERROR"),
            ("small", "error"),
        ),
        # A reason outside the conventions' list is counted as unknown.
        (
            FlagResolutionDetails("gpt-large", variant="large", reason="VENDOR_RULE_17"),
            ("large", "unknown"),
        ),
    ],
)
def test_openfeature_source_serves_the_variant_the_providers_answer_names(
    resolution: FlagResolutionDetails[Any], expected: tuple[str, str]
) -> None:
    """With flags.source = openfeature the toolkit honours the answer's variant, else its
    value, and never serves its default under the provider's reason."""
    provider = _AnsweringProvider(resolution)
    api.set_provider(provider)
    evaluation = OpenFeatureFlags(store=FlagStore()).evaluate("of.model")
    assert (evaluation.variant, evaluation.reason) == expected
    assert evaluation.value == {"small": "gpt-small", "large": "gpt-large"}[expected[0]]
    assert provider.asked == ["string"]


def test_openfeature_source_asks_each_flag_with_the_getter_of_its_values_type() -> None:
    """An integer flag is asked as an integer, and its value maps back to the variant."""
    provider = _AnsweringProvider(FlagResolutionDetails(5, reason="TARGETING_MATCH"))
    api.set_provider(provider)
    evaluation = OpenFeatureFlags(store=FlagStore()).evaluate("of.retries")
    assert (evaluation.variant, evaluation.value, evaluation.reason) == (
        "many",
        5,
        "targeting_match",
    )
    assert provider.asked == ["integer"]
