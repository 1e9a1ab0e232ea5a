"""A support chat on a synchronous sqlite database and a flaky model provider.

    EXAMPLE_MODE=before uvicorn examples.blocking_backend.app:app   # without the toolkit
    EXAMPLE_MODE=after uvicorn examples.blocking_backend.app:app    # with it
    EXAMPLE_MODE=after BLOCKING_BACKEND_FIXES=0 uvicorn ...          # install() alone

Shaped like many first agent servers: async FastAPI handlers that call the standard library's
``sqlite3`` directly (synchronous: while a query runs, the event loop runs nothing else), on
a schema that grew without an index on the conversation, and a model provider that answers
one call in five with a 503. Runs offline: the database is a real sqlite file in a temporary
folder, filled at startup with 600,000 old messages; the model is scripted
(``examples._harness``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path
from pydantic import BaseModel, Field

import toolkit
from examples._harness import (
    ProviderError,
    ScriptedModel,
    after_mode,
    mount_call_counts,
    status_settings,
)

OLD_MESSAGES = 600_000  # what the database holds at startup, over CONVERSATIONS conversations
CONVERSATIONS = 5_000
HISTORY_TURNS = 6  # the turns of history the model is given
MODEL = "support-model"

model = ScriptedModel(MODEL, latency=(0.040, 0.120), slots=8, error_rate=0.2, seed=5)


def _create_database() -> str:
    """A fresh database with OLD_MESSAGES messages, removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="blocking-backend-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "chat.db")
    with sqlite3.connect(path) as db:
        # Write-ahead logging, as any sqlite serving more than one connection should run:
        # readers do not wait for a writer, nor a writer for readers.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation TEXT NOT NULL, "
            "role TEXT NOT NULL, text TEXT NOT NULL, created REAL NOT NULL)"
        )
        # Generated inside sqlite, a second or less; no index on conversation, as in many
        # schemas that started small.
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO messages (conversation, role, text, created) "
            "SELECT 'c-' || (i % ?), CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, "
            "'message ' || i || ' about order ' || (i * 7919 % 100000), i FROM n",
            (OLD_MESSAGES, CONVERSATIONS),
        )
    return path


DATABASE = os.environ.get("BLOCKING_BACKEND_DATABASE") or _create_database()


def save_message(conversation_id: str, role: str, text: str) -> int:
    """Store one message; its id."""
    with sqlite3.connect(DATABASE) as db:
        cursor = db.execute(
            "INSERT INTO messages (conversation, role, text, created) VALUES (?, ?, ?, ?)",
            (conversation_id, role, text, time.time()),
        )
        return cursor.lastrowid or 0


def load_history(conversation_id: str) -> list[tuple[str, str]]:
    """The conversation's last HISTORY_TURNS messages, oldest first: a scan of the whole
    table, since nothing indexes the conversation."""
    with sqlite3.connect(DATABASE) as db:
        rows = db.execute(
            "SELECT role, text FROM messages WHERE conversation = ? ORDER BY created",
            (conversation_id,),
        ).fetchall()
    return [(role, text) for role, text in rows[-HISTORY_TURNS:]]


def prompt_for(history: list[tuple[str, str]], text: str) -> str:
    turns = "\n".join(f"{role}: {said}" for role, said in history)
    return f"You are a support agent. Conversation so far:\n{turns}\n{text}"


async def complete(prompt: str) -> str:
    """The model provider's API."""
    return (await model.complete(prompt)).text


async def answer(conversation_id: str, text: str) -> str:
    """Store the user's message, answer it from the conversation's history, store the answer."""
    save_message(conversation_id, "user", text)
    history = load_history(conversation_id)
    reply = await complete(prompt_for(history, text))
    save_message(conversation_id, "assistant", reply)
    return reply


class MessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


class Reply(BaseModel):
    conversation_id: str
    reply: str


ConversationId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[\w-]+$")]

app = FastAPI(title="blocking backend")
mount_call_counts(app, {"model": model})


@app.post("/conversations/{conversation_id}/messages")
async def post_message(conversation_id: ConversationId, message: MessageIn) -> Reply:
    try:
        reply = await answer(conversation_id, message.text)
    except ProviderError as error:
        raise HTTPException(502, "the model provider failed; try again") from error
    except TimeoutError as error:
        raise HTTPException(504, "the model provider did not answer in time") from error
    return Reply(conversation_id=conversation_id, reply=reply)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if after_mode():
    # The loop monitor comes with install(): its watchdog reports every stretch of 20 ms or
    # more in which the loop did not turn, with the line that held it (on the status page,
    # /_toolkit/stats, a span and a log line). 20 ms, not the default 100 ms: this demo's
    # queries are short, and even a few milliseconds of them, under load, stall every request.
    settings = toolkit.ToolkitSettings(
        event_loop={"blocked_threshold": "20ms"}, **status_settings()
    )
    toolkit.install(app, settings)

    if os.environ.get("BLOCKING_BACKEND_FIXES", "1") != "0":
        # What the watchdog pointed at, moved to the toolkit's bounded thread pool: sqlite3
        # releases the GIL while it works, so the loop turns meanwhile.
        save_message_offloaded = toolkit.offload(save_message)
        load_history_offloaded = toolkit.offload(load_history)
        # A 503 from an overloaded provider is worth another try, soon: four attempts in
        # all, 50 ms apart and doubling (plus up to 50 ms of jitter), within 5 s.
        retry = toolkit.RetryPolicy(
            on=ProviderError, attempts=4, wait_initial="50ms", wait_jitter="50ms"
        )
        complete = toolkit.resilient(retries=retry, timeout="5s")(complete)

        async def answer(conversation_id: str, text: str) -> str:
            await save_message_offloaded(conversation_id, "user", text)
            history = await load_history_offloaded(conversation_id)
            reply = await complete(prompt_for(history, text))
            await save_message_offloaded(conversation_id, "assistant", reply)
            return reply
