"""The smallest app that loads the toolkit's settings at import, as a new user wires it.

Run as ``uvicorn tests.apps.installed:app`` with ``TOOLKIT_*`` set: the settings test runs it
with bad ones and expects the process to stop at startup, naming the setting.
"""

from __future__ import annotations

from fastapi import FastAPI

import toolkit

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/chat")
async def chat() -> dict[str, str]:
    return {"answer": "hello"}


toolkit.install(app)
