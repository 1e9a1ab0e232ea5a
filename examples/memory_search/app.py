"""A memory-search service: what an assistant remembers of each user, and the search over it.

    EXAMPLE_MODE=before uvicorn examples.memory_search.app:app   # without the toolkit
    EXAMPLE_MODE=after uvicorn examples.memory_search.app:app    # with it

Shaped like the memory layer of an assistant (mem0, Zep and the like): ``POST .../memories``
has a model extract the facts of a message and files each in three stores, ``POST
.../search`` embeds the query and asks the three stores what they know. Runs offline: the
embedding and extraction models are scripted (``examples._harness``), and the stores are in
memory behind a round trip each, the graph store slow now and then, the document store
dropping a connection now and then, as remote ones do.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict, deque
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path
from pydantic import BaseModel, Field

import toolkit
from examples._harness import (
    ProviderError,
    ScriptedEmbedder,
    ScriptedModel,
    after_mode,
    mount_call_counts,
    similarity,
    status_settings,
    vector_of,
)

EMBEDDING_MODEL = "memory-embed-small"
EXTRACTION_MODEL = "memory-extract"
TOP_K = 3  # memories each store returns
MEMORIES_PER_PROFILE = 200  # each store keeps a profile's newest memories, no more
STORE_DEADLINE = "150ms"  # after: the most a store may take before the search goes without it
SEARCH_DEADLINE = "400ms"  # after: the whole fan-out


class StoreError(ConnectionError):
    """A store dropped the connection."""


class Store:
    """A remote store: each call a round trip of ``latency`` seconds, ``slow_rate`` of them
    ``slow`` seconds instead (a compaction, a cold shard), ``error_rate`` of them dropped."""

    def __init__(
        self,
        name: str,
        *,
        latency: tuple[float, float],
        slow_rate: float = 0.0,
        slow: float = 0.0,
        error_rate: float = 0.0,
        seed: int,
    ) -> None:
        self.name = name
        self.latency = latency
        self.slow_rate = slow_rate
        self.slow = slow
        self.error_rate = error_rate
        self.calls = 0
        self._rng = random.Random(seed)

    async def _round_trip(self, *, read: bool = True) -> None:
        """One call; a read may be slow or dropped (it goes to a replica), a write is not."""
        self.calls += 1
        slow = read and self._rng.random() < self.slow_rate
        await asyncio.sleep(self.slow if slow else self._rng.uniform(*self.latency))
        if read and self._rng.random() < self.error_rate:
            raise StoreError(f"{self.name}: connection reset by peer")


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if len(word) > 3}


class VectorStore(Store):
    """Memories by embedding: the nearest ``TOP_K`` to the query's vector."""

    def __init__(self) -> None:
        super().__init__("vector", latency=(0.020, 0.040), seed=21)
        self._rows: defaultdict[str, deque[tuple[str, list[float]]]] = defaultdict(
            lambda: deque(maxlen=MEMORIES_PER_PROFILE)
        )

    async def add(self, profile_id: str, text: str, vector: list[float]) -> None:
        await self._round_trip(read=False)
        self.load(profile_id, text, vector)

    def load(self, profile_id: str, text: str, vector: list[float]) -> None:
        self._rows[profile_id].append((text, vector))

    async def search(self, profile_id: str, vector: list[float]) -> list[str]:
        await self._round_trip()
        rows = sorted(self._rows[profile_id], key=lambda row: -similarity(row[1], vector))
        return [text for text, _ in rows[:TOP_K]]


class GraphStore(Store):
    """Memories by the entities they mention: those sharing one with the query. Slow now and
    then, as a graph database on a deep traversal."""

    def __init__(self) -> None:
        super().__init__("graph", latency=(0.030, 0.060), slow_rate=0.08, slow=0.5, seed=22)
        self._edges: defaultdict[str, deque[tuple[frozenset[str], str]]] = defaultdict(
            lambda: deque(maxlen=MEMORIES_PER_PROFILE)
        )

    async def add(self, profile_id: str, text: str) -> None:
        await self._round_trip(read=False)
        self.load(profile_id, text)

    def load(self, profile_id: str, text: str) -> None:
        self._edges[profile_id].append((frozenset(_words(text)), text))

    async def search(self, profile_id: str, query: str) -> list[str]:
        await self._round_trip()
        entities = _words(query)
        return [text for nodes, text in self._edges[profile_id] if nodes & entities][-TOP_K:]


class DocumentStore(Store):
    """Memories as text, by the words they share with the query. Drops a connection now and
    then."""

    def __init__(self) -> None:
        super().__init__("document", latency=(0.015, 0.030), error_rate=0.04, seed=23)
        self._texts: defaultdict[str, deque[str]] = defaultdict(
            lambda: deque(maxlen=MEMORIES_PER_PROFILE)
        )

    async def add(self, profile_id: str, text: str) -> None:
        await self._round_trip(read=False)
        self.load(profile_id, text)

    def load(self, profile_id: str, text: str) -> None:
        self._texts[profile_id].append(text)

    async def search(self, profile_id: str, query: str) -> list[str]:
        await self._round_trip()
        words = _words(query)
        scored = sorted(self._texts[profile_id], key=lambda text: -len(words & _words(text)))
        return [text for text in scored[:TOP_K] if words & _words(text)]


def extract_facts(prompt: str) -> str:
    """The scripted extraction model: each sentence of the message that says something about
    the user, one a line (what a prompt such as "list the facts worth remembering" returns)."""
    message = prompt.rsplit("\n", 1)[-1]
    sentences = [s.strip() for s in re.split(r"[.!?]+", message) if len(_words(s)) >= 2]
    return "\n".join(sentences)


EXTRACTION_PROMPT = "List the facts about the user worth remembering, one a line. Message:\n"

embedder = ScriptedEmbedder(EMBEDDING_MODEL, latency=(0.030, 0.060), slots=8)
extractor = ScriptedModel(
    EXTRACTION_MODEL, latency=(0.150, 0.300), slots=4, error_rate=0.05, seed=31, reply=extract_facts
)
vectors, graph, documents = VectorStore(), GraphStore(), DocumentStore()

# What the stores already hold when the service starts: a few facts for each profile.
PROFILES = tuple(f"user-{number}" for number in range(1, 13))
KNOWN_FACTS = (
    "Lives in Lyon since March",
    "Works as a nurse at the city hospital",
    "Allergic to peanuts and shellfish",
    "Sister Anna lives in Berlin",
    "Prefers vegetarian restaurants",
    "Runs the Lyon half marathon every autumn",
    "Drives an electric hatchback",
    "Daughter starts school in September",
    "Learning Japanese for a trip to Kyoto",
    "Plays cello in an amateur orchestra",
)


def _load_known_facts() -> None:
    for number, profile_id in enumerate(PROFILES):
        for fact in KNOWN_FACTS[number % 4 :: 2]:
            vectors.load(profile_id, fact, vector_of(fact, embedder.dimensions))
            graph.load(profile_id, fact)
            documents.load(profile_id, fact)


_load_known_facts()


async def embed(texts: list[str]) -> list[list[float]]:
    """The embedding API: one call per batch of texts."""
    return await embedder.embed_many(texts)


async def remember(profile_id: str, text: str) -> int:
    """Extract the facts of ``text`` (a model call), embed them, and file each in the three
    stores; the facts filed."""
    completion = await extractor.complete(EXTRACTION_PROMPT + text)
    facts = [line for line in completion.text.splitlines() if line]
    if not facts:
        return 0
    for fact, vector in zip(facts, await embed(facts), strict=True):
        await vectors.add(profile_id, fact, vector)
        await graph.add(profile_id, fact)
        await documents.add(profile_id, fact)
    return len(facts)


def merge(*found: list[str]) -> list[str]:
    """The stores' memories, each once, in the order the stores returned them."""
    return list(dict.fromkeys(text for texts in found for text in texts))


async def retrieve(profile_id: str, query: str) -> dict[str, Any]:
    """What the three stores know of ``query``, one store after another, and the stores that
    did not answer (none: a store that fails fails the search)."""
    (vector,) = await embed([query])
    by_vector = await vectors.search(profile_id, vector)
    by_graph = await graph.search(profile_id, query)
    by_text = await documents.search(profile_id, query)
    return {"memories": merge(by_vector, by_graph, by_text), "missing": []}


class MemoryIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=500)


class Added(BaseModel):
    status: str  # "stored", or "accepted" when the work runs after the answer
    facts: int | None  # the facts filed; None until then


class Found(BaseModel):
    memories: list[str]
    missing: list[str]  # the stores that did not answer in time: a partial answer


async def add_memory(profile_id: str, text: str) -> Added:
    return Added(status="stored", facts=await remember(profile_id, text))


app = FastAPI(title="memory search")
mount_call_counts(app, {"embedding": embedder, "extraction": extractor})

ProfileId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[\w-]+$")]


@app.post("/profiles/{profile_id}/memories")
async def add(profile_id: ProfileId, memory: MemoryIn) -> Added:
    try:
        return await add_memory(profile_id, memory.text)
    except ProviderError as error:
        raise HTTPException(503, "the extraction model is unavailable; try again") from error


@app.post("/profiles/{profile_id}/search")
async def search(profile_id: ProfileId, body: SearchIn) -> Found:
    try:
        return Found(**await retrieve(profile_id, body.query))
    except StoreError as error:
        raise HTTPException(503, "memory search is unavailable; try again") from error


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if after_mode():
    toolkit.install(app, toolkit.ToolkitSettings(**status_settings()))

    # Each text embedded once, for every caller and instance: a repeated query costs a
    # lookup, and the texts of concurrent calls go to the API as one batch.
    embed = toolkit.cache_embeddings(model=EMBEDDING_MODEL)(embed)

    # A dropped connection to the document store is worth one more try, within its deadline.
    search_documents = toolkit.resilient(retries=2, retry_on=StoreError)(documents.search)

    def profile_tag(profile_id: str, query: str) -> list[str]:
        return [f"profile:{profile_id}"]

    # The three stores at once, each within its deadline: one that is slow or down costs
    # STORE_DEADLINE and the search answers without it (and says so, in "missing"). A search's
    # answer is kept per profile and query until that profile remembers something new; one
    # made with a store missing is not kept (a fallback answered).
    @toolkit.cached(ttl="10m", namespace="retrieval", tags=profile_tag)
    async def retrieve(profile_id: str, query: str) -> dict[str, Any]:
        (vector,) = await embed([query])
        found = await toolkit.gather(
            toolkit.branch(
                "vector", vectors.search, profile_id, vector, deadline=STORE_DEADLINE, fallback=[]
            ),
            toolkit.branch(
                "graph", graph.search, profile_id, query, deadline=STORE_DEADLINE, fallback=[]
            ),
            toolkit.branch(
                "document",
                search_documents,
                profile_id,
                query,
                deadline=STORE_DEADLINE,
                fallback=[],
            ),
            name="memory.search",
            deadline=SEARCH_DEADLINE,
        )
        answered = found.values()
        return {
            "memories": merge(
                *(answered.get(name, []) for name in ("vector", "graph", "document"))
            ),
            "missing": [
                name for name in ("vector", "graph", "document") if found[name].outcome != "ok"
            ],
        }

    # Extraction runs after the answer, retried if the model fails; once the facts are filed,
    # the profile's cached searches go, on every instance.
    filed = remember

    @toolkit.background(retries=2, name="memory.extract")
    async def remember_later(profile_id: str, text: str) -> None:
        await filed(profile_id, text)
        await toolkit.cache.invalidate(tags=[f"profile:{profile_id}"])

    async def add_memory(profile_id: str, text: str) -> Added:
        await remember_later.defer(profile_id, text)
        return Added(status="accepted", facts=None)
