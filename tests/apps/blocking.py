"""An app with the mistake the loop monitor is for: a synchronous sqlite3 write in an async
route. Run as ``uvicorn tests.apps.blocking:app``; ``NOTES_DB`` names the database file.

The write calls a sqlite function that sleeps, as a write waits on a busy disk or a locked
database: the loop is blocked for ``PAUSE`` seconds by the line marked below. ``/notes/offloaded``
is the fix the report points at: the same write in an ``@toolkit.offload`` function.
"""

from __future__ import annotations

import os
import sqlite3
import time

from fastapi import FastAPI

import toolkit

PAUSE = 0.3

app = FastAPI()
connection = sqlite3.connect(os.environ.get("NOTES_DB", ":memory:"), check_same_thread=False)
connection.create_function("pause", 1, time.sleep)
connection.execute("create table if not exists notes (text text)")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/notes")
async def add_note() -> dict[str, str]:
    with connection:
        connection.execute("insert into notes values (pause(?))", (PAUSE,))  # blocks the loop
    return {"status": "saved"}


@toolkit.offload
def save_note() -> None:
    with connection:
        connection.execute("insert into notes values (pause(?))", (PAUSE,))  # on a thread


@app.post("/notes/offloaded")
async def add_note_offloaded() -> dict[str, str]:
    await save_note()
    return {"status": "saved"}


toolkit.install(app)
