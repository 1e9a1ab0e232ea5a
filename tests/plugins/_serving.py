"""An app under ``toolkit.install()`` on a test's providers, started, with a client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

import toolkit
from tests.support.asgi import http_client, lifespan
from toolkit.settings import ToolkitSettings


@asynccontextmanager
async def installed(
    app: FastAPI, tracer_provider: Any, meter_provider: Any, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` installed with ``settings`` (keyword arguments of ToolkitSettings), through its
    lifespan, with a client to it."""
    toolkit.install(
        app,
        ToolkitSettings(**settings),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    async with lifespan(app), http_client(app) as client:
        yield client
