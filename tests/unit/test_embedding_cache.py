"""@cache_embeddings on memory and real Redis: partial hits in place, duplicates embedded
once, float32 storage, wrong counts refused, failures and telemetry."""

from __future__ import annotations

import array
import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.otel import counter_value
from tests.support.waiting import eventually
from tests.unit.conftest import StoppableCache
from toolkit._savings import Tally
from toolkit.backends import Backend, MemoryBackend
from toolkit.cache import CacheStore, cache_embeddings, set_current_cache
from toolkit.cache._keys import KEY_DIGEST_BYTES
from toolkit.cache._saved import add_share, shares
from toolkit.cache.embeddings import pack, unpack
from toolkit.errors import ConfigurationError
from toolkit.flags import CACHE_EMBEDDINGS, override
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
def store(backend: Backend, meter_provider: MeterProvider) -> CacheStore:
    store = CacheStore(backend, meter_provider=meter_provider)
    set_current_cache(store)
    return store


def vector_of(text: str) -> list[float]:
    """A vector that identifies its text (exact in float32), so a misplaced one shows."""
    return [float(len(text)), float(sum(map(ord, text)) % 10_000), 0.5]


class Model:
    """A fake embedding model that records each batch it is asked for."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return [vector_of(text) for text in texts]


def requests(reader: InMemoryMetricReader, result: str) -> float:
    return counter_value(
        reader,
        names.CACHE_REQUESTS,
        **{names.CACHE_NAME: "embeddings", names.CACHE_RESULT: result},
    )


async def test_embeddings_partial_hits_come_back_at_their_input_positions(
    store: CacheStore,
) -> None:
    """Regression for BerriAI/litellm#29284 (partial hits at the wrong positions): with the
    2nd and 4th texts cached, the model is asked for the 1st, 3rd and 5th only, in order,
    and every vector lands at its own text's position."""
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    await embed(["b", "dddd"])
    texts = ["a", "b", "ccc", "dddd", "eeeee"]
    assert await embed(texts) == [vector_of(t) for t in texts]
    assert model.batches == [["b", "dddd"], ["a", "ccc", "eeeee"]]
    assert await embed(list(reversed(texts))) == [vector_of(t) for t in reversed(texts)]
    assert len(model.batches) == 2


async def test_embeddings_duplicates_in_a_batch_are_embedded_once_and_fill_every_position(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    await embed(["cached"])
    texts = ["x", "cached", "y", "x", "cached", "x"]
    assert await embed(texts) == [vector_of(t) for t in texts]
    assert model.batches[1] == ["x", "y"]
    # Per item: 1 miss for the warm-up, then 2 hits and 4 misses (duplicates included).
    assert requests(metric_reader, names.CACHE_HIT) == 2
    assert requests(metric_reader, names.CACHE_MISS) == 5


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    warm=st.lists(st.sampled_from("abcdefgh"), max_size=6),
    texts=st.lists(st.sampled_from("abcdefgh"), max_size=12),
)
async def test_embeddings_any_mix_of_hits_misses_and_duplicates_returns_input_order(
    warm: list[str], texts: list[str]
) -> None:
    """For any cached subset and any batch: one vector per text in input order, and the model
    sees each missing text once, in first-occurrence order."""
    set_current_cache(CacheStore(MemoryBackend()))
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    if warm:
        await embed(warm)
    model.batches.clear()
    assert await embed(texts) == [vector_of(t) for t in texts]
    missing = list(dict.fromkeys(t for t in texts if t not in warm))
    assert model.batches == ([missing] if missing else [])


async def test_embeddings_accept_any_sequence_and_return_empty_for_empty_without_a_call(
    store: CacheStore,
) -> None:
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    assert await embed(("a", "b")) == [vector_of("a"), vector_of("b")]  # type: ignore[arg-type]
    assert await embed([]) == []
    assert model.batches == [["a", "b"]]


async def test_embeddings_are_stored_as_float32_and_returned_alike_for_hits_and_misses(
    store: CacheStore,
) -> None:
    """A vector comes back float32-rounded whether computed or cached, so results do not
    depend on the cache's state; each dimension costs 4 bytes."""
    precise = [0.1, 1 / 3, -2.000001]

    async def embed_precisely(texts: list[str]) -> list[list[float]]:
        return [precise for _ in texts]

    embed = cache_embeddings(model="m")(embed_precisely)
    rounded = array.array("f", precise).tolist()
    assert rounded != precise
    assert await embed(["a"]) == [rounded]
    assert await embed(["a"]) == [rounded]
    assert len(pack(precise)) == 12
    assert unpack(pack(precise)) == rounded


async def test_embeddings_model_is_part_of_every_key(store: CacheStore) -> None:
    small, large = Model(), Model()
    embed_small = cache_embeddings(model="text-embedding-3-small")(small.embed)
    embed_large = cache_embeddings(model="text-embedding-3-large")(large.embed)
    await embed_small(["a"])
    await embed_large(["a"])
    assert small.batches == [["a"]]
    assert large.batches == [["a"]]


async def test_embeddings_wrong_number_of_vectors_raises_and_stores_nothing(
    store: CacheStore,
) -> None:
    model = Model()

    async def drops_one(texts: list[str]) -> list[list[float]]:
        model.batches.append(list(texts))
        return [vector_of(t) for t in texts][:-1]

    embed = cache_embeddings(model="m")(drops_one)
    with pytest.raises(ValueError, match="returned 1 vectors for 2 texts"):
        await embed(["a", "b"])
    with pytest.raises(ValueError, match="one vector per text"):
        await embed(["a", "b"])
    assert model.batches == [["a", "b"], ["a", "b"]]  # nothing was stored


async def test_embeddings_wrap_methods_and_keyword_calls(store: CacheStore) -> None:
    class Embedder:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        @cache_embeddings(model="m")
        async def embed(self, texts: list[str]) -> list[list[float]]:
            self.batches.append(list(texts))
            return [vector_of(t) for t in texts]

    embedder = Embedder()
    assert await embedder.embed(["a"]) == [vector_of("a")]
    assert await embedder.embed(texts=["a", "b"]) == [vector_of("a"), vector_of("b")]
    assert embedder.batches == [["a"], ["b"]]


async def test_embeddings_tags_invalidate_vectors(store: CacheStore) -> None:
    model = Model()
    embed = cache_embeddings(model="m", tags=["corpus-v1"])(model.embed)
    await embed(["a", "b"])
    assert await store.invalidate(["corpus-v1"]) == 2
    await embed(["a"])
    assert model.batches == [["a", "b"], ["a"]]


async def test_embeddings_flag_off_goes_straight_to_the_function(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    await embed(["a"])
    with override({CACHE_EMBEDDINGS: "off"}):
        assert await embed(["a", "a"]) == [vector_of("a")] * 2
    assert model.batches == [["a"], ["a", "a"]]
    assert requests(metric_reader, names.CACHE_BYPASS) == 2


async def test_embeddings_batches_that_are_not_text_go_straight_to_the_function(
    store: CacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.cache")
    calls: list[Any] = []

    async def embed_tokens(texts: Sequence[Any]) -> list[list[float]]:
        calls.append(texts)
        return [[1.0] for _ in texts]

    embed = cache_embeddings(model="m")(embed_tokens)
    assert await embed([[1, 2], [3]]) == [[1.0], [1.0]]
    assert await embed("one string") == [[1.0]] * 10
    assert calls == [[[1, 2], [3]], "one string"]
    assert len(caplog.records) == 1
    assert "not a sequence of str" in caplog.text


async def test_embeddings_decisions_are_on_the_current_span_once_per_result(
    store: CacheStore, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    await embed(["a"])
    with tracer_provider.get_tracer("test").start_as_current_span("request"):
        await embed(["a", "b", "c"])
    (span,) = span_exporter.get_finished_spans()
    events = [dict(e.attributes or {}) for e in span.events]
    assert events == [
        {names.CACHE_NAME: "embeddings", names.CACHE_RESULT: "hit"},
        {names.CACHE_NAME: "embeddings", names.CACHE_RESULT: "miss"},
    ]


async def test_embeddings_refuse_functions_that_take_more_than_the_texts() -> None:
    async def embed(texts: list[str], dimensions: int) -> list[list[float]]:
        return []

    def embed_sync(texts: list[str]) -> list[list[float]]:
        return []

    with pytest.raises(ConfigurationError, match=r"takes \(texts, dimensions\)"):
        cache_embeddings(model="m")(embed)

    def embed_each(texts: list[str]) -> Iterator[list[float]]:
        yield from ([0.0] for _ in texts)

    async def embed_stream(texts: list[str]) -> AsyncIterator[list[float]]:
        for _ in texts:
            yield [0.0]

    with pytest.raises(ConfigurationError, match="async function"):
        cache_embeddings(model="m")(embed_sync)  # type: ignore[arg-type]
    for generator in (embed_each, embed_stream):
        with pytest.raises(ConfigurationError, match="is a generator function; return the list"):
            cache_embeddings(model="m")(generator)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="model=''"):
        cache_embeddings(model="")
    with pytest.raises(ConfigurationError, match="ttl='forever'"):
        cache_embeddings(model="m", ttl="forever")
    for bad in (0, -1, 2.5, True, "32"):
        with pytest.raises(ConfigurationError, match=rf"max_batch={bad!r}"):
            cache_embeddings(model="m", max_batch=bad)  # type: ignore[arg-type]


async def test_embeddings_are_computed_without_raising_while_redis_is_down_and_recover(
    stoppable_cache: StoppableCache, metric_reader: InMemoryMetricReader
) -> None:
    """Redis stopped: the model embeds every text (duplicates once), the vectors come back in
    order, no exception from the cache, counted as errors; when Redis returns, caching
    resumes by itself."""
    server = stoppable_cache.server
    model = Model()
    embed = cache_embeddings(model="m")(model.embed)
    await embed(["a"])
    server.stop()
    started = time.monotonic()
    assert await embed(["a", "b", "a"]) == [vector_of(t) for t in ["a", "b", "a"]]
    assert await embed(["a"]) == [vector_of("a")]
    assert time.monotonic() - started < 1.0
    assert model.batches == [["a"], ["a", "b"], ["a"]]
    assert requests(metric_reader, names.CACHE_ERROR) == 4

    server.start()
    deadline = time.monotonic() + 5
    while requests(metric_reader, names.CACHE_HIT) < 1 and time.monotonic() < deadline:
        await embed(["c"])
        await asyncio.sleep(0.05)
    assert requests(metric_reader, names.CACHE_HIT) >= 1


# --- concurrent callers ---------------------------------------------------------------------------


class SlowModel(Model):
    """An embedding API taking a few milliseconds a call, long enough for calls to overlap."""

    def __init__(self, seconds: float = 0.01) -> None:
        super().__init__()
        self.seconds = seconds

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        await asyncio.sleep(self.seconds)
        return [vector_of(text) for text in texts]


async def test_embeddings_concurrent_callers_of_a_new_text_embed_it_once(
    store: CacheStore,
) -> None:
    """400 searches over 20 queries, arriving at random moments while earlier ones are still
    embedding (9 texts were embedded twice in a service's 400 searches before): every text
    is embedded exactly once and every search gets its vector."""
    rng = random.Random(7)
    model = SlowModel()
    embed = cache_embeddings(model="m")(model.embed)
    queries = [f"query {i}" for i in range(20)]

    async def search(query: str) -> list[list[float]]:
        await asyncio.sleep(rng.random() * 0.05)
        return await embed([query])

    asked = [rng.choice(queries) for _ in range(400)]
    answers = await asyncio.gather(*(search(q) for q in asked))
    assert answers == [[vector_of(q)] for q in asked]
    embedded = [text for batch in model.batches for text in batch]
    assert sorted(embedded) == sorted(set(asked))


async def test_embeddings_new_texts_of_one_loop_turn_go_to_the_model_as_one_call(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """Ten callers with one new text each, and two asking for the same one, at once: one call
    with the ten texts; the repeated text counts as a hit for the caller that waited."""
    model = SlowModel()
    embed = cache_embeddings(model="m")(model.embed)
    texts = [f"t{i}" for i in range(10)] + ["t0"]
    answers = await asyncio.gather(*(embed([text]) for text in texts))
    assert answers == [[vector_of(text)] for text in texts]
    assert model.batches == [[f"t{i}" for i in range(10)]]
    assert requests(metric_reader, names.CACHE_MISS) == 10
    assert requests(metric_reader, names.CACHE_HIT) == 1
    assert await embed(["t3", "t7"]) == [vector_of("t3"), vector_of("t7")]
    assert len(model.batches) == 1  # stored


async def test_embeddings_merged_calls_keep_to_max_batch_and_never_split_a_callers_texts(
    store: CacheStore,
) -> None:
    """max_batch=4: nine single-text callers at once make calls of 4, 4 and 1 texts; a
    caller's own six new texts go together in one call, as it would send them alone."""
    model = SlowModel()
    embed = cache_embeddings(model="m", max_batch=4)(model.embed)
    await asyncio.gather(*(embed([f"t{i}"]) for i in range(9)))
    assert [len(batch) for batch in model.batches] == [4, 4, 1]
    model.batches.clear()
    six = [f"six{i}" for i in range(6)]
    await asyncio.gather(embed(["a"]), embed(six), embed(["b"]))
    assert six in model.batches
    assert sorted(len(batch) for batch in model.batches) == [2, 6]


async def test_embeddings_methods_of_different_objects_are_never_merged(
    store: CacheStore,
) -> None:
    """A method's calls merge per object: each instance may hold its own client."""

    class Embedder:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        @cache_embeddings(model="m")
        async def embed(self, texts: list[str]) -> list[list[float]]:
            self.batches.append(list(texts))
            return [vector_of(text) for text in texts]

    first, second = Embedder(), Embedder()
    await asyncio.gather(first.embed(["a"]), second.embed(["b"]), first.embed(texts=["c"]))
    assert first.batches == [["a", "c"]]
    assert second.batches == [["b"]]


async def test_embeddings_a_failed_merged_call_fails_each_caller_and_the_next_call_retries(
    store: CacheStore,
) -> None:
    failing = True
    batches: list[list[str]] = []

    async def flaky(texts: list[str]) -> list[list[float]]:
        batches.append(list(texts))
        await asyncio.sleep(0.01)
        if failing:
            raise RuntimeError("rate limited")
        return [vector_of(text) for text in texts]

    embed = cache_embeddings(model="m")(flaky)
    results = await asyncio.gather(embed(["a"]), embed(["b"]), embed(["a"]), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert batches == [["a", "b"]]
    failing = False
    assert await embed(["a", "b"]) == [vector_of("a"), vector_of("b")]
    assert batches == [["a", "b"], ["a", "b"]]


async def test_embeddings_a_cancelled_caller_leaves_the_others_their_vectors(
    store: CacheStore,
) -> None:
    model = SlowModel(0.05)
    embed = cache_embeddings(model="m")(model.embed)
    leaving = asyncio.create_task(embed(["a", "b"]))
    staying = asyncio.create_task(embed(["a"]))
    await eventually(lambda: bool(model.batches))  # both wait for the call now
    leaving.cancel()
    assert await staying == [vector_of("a")]
    assert model.batches == [["a", "b"]]
    assert await embed(["b"]) == [vector_of("b")]
    assert len(model.batches) == 1  # the cancelled caller's texts were stored too


async def test_embeddings_a_caller_waits_for_anothers_call_at_most_the_time_left(
    store: CacheStore,
) -> None:
    """A caller whose texts another call is embedding waits at most its deadline, then
    raises DeadlineExceeded; the call goes on and the first caller gets its vectors."""
    calling, release = asyncio.Event(), asyncio.Event()
    model = Model()

    async def slow(texts: list[str]) -> list[list[float]]:
        calling.set()
        await release.wait()
        return await model.embed(texts)

    embed = cache_embeddings(model="m")(slow)
    first = asyncio.create_task(embed(["a"]))
    await calling.wait()
    started = time.monotonic()
    with toolkit.deadline(0.2), pytest.raises(toolkit.DeadlineExceeded, match="being embedded"):
        await embed(["a"])
    assert 0.15 < time.monotonic() - started < 1.5
    release.set()
    assert await first == [vector_of("a")]
    assert model.batches == [["a"]]  # embedded once


async def test_embeddings_a_shared_call_runs_under_its_own_deadline_not_its_first_callers(
    store: CacheStore,
) -> None:
    """The first caller (100 ms left) starts the call, a second (5 s left) joins it: the
    toolkit waits inside the embedding function see the call's own deadline, so the first
    caller's cannot cut it for the second; each caller waits only its own time left."""
    calling = asyncio.Event()
    model = Model()
    seen: list[float | None] = []

    @toolkit.resilient(timeout=None)  # bounded by the current deadline: the call's
    async def slow(texts: list[str]) -> list[list[float]]:
        seen.append(toolkit.time_left())
        calling.set()
        await asyncio.sleep(0.3)
        return await model.embed(texts)

    embed = cache_embeddings(model="m")(slow)
    with toolkit.deadline(0.1):
        first = asyncio.create_task(embed(["a"]))
    await calling.wait()
    with toolkit.deadline(5):
        second = asyncio.create_task(embed(["a"]))
    with pytest.raises(toolkit.DeadlineExceeded, match="being embedded"):
        await first  # its own wait, at its own deadline
    assert await second == [vector_of("a")]
    assert model.batches == [["a"]]  # embedded once, for both
    assert seen[0] is not None
    assert seen[0] > 1  # cache.wait (60 s), not the first caller's 0.1 s
    assert len(seen) == 1
    assert await embed(["a"]) == [vector_of("a")]  # stored: a hit
    assert model.batches == [["a"]]


async def test_embeddings_computed_before_an_invalidation_of_their_tags_are_not_stored_after_it(
    store: CacheStore,
) -> None:
    """The corpus is re-embedded with a new model version while a batch is in flight: the
    vectors of the old one are returned to its callers but not stored."""
    version = 1
    started, release = asyncio.Event(), asyncio.Event()

    async def embed_model(texts: list[str]) -> list[list[float]]:
        seen = version
        started.set()
        await release.wait()
        return [[float(seen)] for _ in texts]

    embed = cache_embeddings(model="m", tags=["corpus"])(embed_model)
    first = asyncio.create_task(embed(["a"]))
    await started.wait()
    version = 2
    await toolkit.cache.invalidate(tags=["corpus"])
    release.set()
    assert await first == [[1.0]]
    assert await embed(["a"]) == [[2.0]]
    assert await embed(["a"]) == [[2.0]]


# --- what a hit spared ------------------------------------------------------------------------


class RecordedModel(Model):
    """An embedding model whose calls are recorded as model calls, a token per character."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        with toolkit.llm_call("emb-small", provider="openai", operation="embeddings") as call:
            call.usage(input_tokens=sum(len(text) for text in texts))
            return await super().embed(texts)


def saved(reader: InMemoryMetricReader, metric: str, **attributes: str) -> float:
    return counter_value(reader, metric, toolkit__cache__name="embeddings", **attributes)


async def test_embeddings_hits_count_the_tokens_their_texts_cost_and_whole_requests_a_call(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    model = RecordedModel()
    embed = cache_embeddings(model="m")(model.embed)
    await embed(["aaaa", "bb"])  # computed: 6 tokens, split 4 and 2
    assert saved(metric_reader, names.CACHE_SAVED_CALLS) == 0
    await embed(["aaaa", "bb", "aaaa"])  # wholly from the cache: a call, 10 tokens
    assert saved(metric_reader, names.CACHE_SAVED_CALLS, gen_ai__request__model="emb-small") == 1
    assert saved(metric_reader, names.CACHE_SAVED_TOKENS, gen_ai__token__type="input") == 10
    await embed(["bb", "new"])  # in part: the call was made, the hit's 2 tokens spared
    assert saved(metric_reader, names.CACHE_SAVED_CALLS) == 1
    assert saved(metric_reader, names.CACHE_SAVED_TOKENS, gen_ai__token__type="input") == 12
    assert model.batches == [["aaaa", "bb"], ["new"]]


def stored_as(text: str, model: str = "m") -> tuple[str, str]:
    """The keys of ``text``'s vector and of its share, as the stored form defines them."""
    digest = hashlib.blake2b(model.encode() + b"\x00", digest_size=KEY_DIGEST_BYTES)
    digest.update(text.encode())
    return "embeddings:" + digest.hexdigest(), "embeddings.saved:" + digest.hexdigest()


async def test_embeddings_vectors_stay_raw_float32_with_their_share_in_a_key_beside_them(
    store: CacheStore,
) -> None:
    """The vector entry is what a toolkit from before the shares reads (raw float32, its
    length divisible by 4): the share never changes it."""
    await cache_embeddings(model="m")(RecordedModel().embed)(["abc"])
    vector_key, share_key = stored_as("abc")
    assert await store.get(vector_key) == pack(vector_of("abc"))
    assert await store.get(share_key) is not None


async def test_embeddings_stored_without_a_share_are_hits_that_save_nothing(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """Vectors stored as a toolkit from before the shares stores them (as does a function that
    records no model call): read as before, saving nothing."""
    await cache_embeddings(model="m")(Model().embed)(["abc", "de"])
    assert await store.get(stored_as("abc")[1]) is None
    model = RecordedModel()
    assert await cache_embeddings(model="m")(model.embed)(["abc", "de"]) == [
        vector_of("abc"),
        vector_of("de"),
    ]
    assert model.batches == []
    assert requests(metric_reader, names.CACHE_HIT) == 2
    assert saved(metric_reader, names.CACHE_SAVED_CALLS) == 0
    assert saved(metric_reader, names.CACHE_SAVED_TOKENS) == 0


@given(
    total=st.integers(min_value=0, max_value=10**9),
    texts=st.lists(st.text(max_size=50), min_size=1, max_size=40),
)
def test_a_batchs_tokens_split_among_its_texts_add_up_to_the_batchs(
    total: int, texts: list[str]
) -> None:
    tally = Tally()
    tally.add("emb", 1, total, 0)
    back = Tally()
    for share in shares(tally, texts):
        add_share(back, share)
    assert back.models == {"emb": [0, total, 0]}
