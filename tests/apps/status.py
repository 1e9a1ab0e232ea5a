"""An agent server with traffic for every section of the status page.

Run as ``uvicorn --factory tests.apps.status:status_app`` with ``TOOLKIT_ADMIN__TOKENS`` (and
``TOOLKIT_ADMIN__READ_TOKENS``) set; the unit tests build it with their settings. Its agent is
traced by hand with the GenAI span names and attributes the toolkit's agent layer emits
(``invoke_agent {name}``, ``chat {model}``, ``execute_tool {name}``), on the toolkit's tracer
provider. The event-loop monitor is the real one ``install()`` starts; ``/block`` blocks the
loop with a synchronous sqlite write (slowed as on a busy disk), at :data:`BLOCKING_CALL`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import toolkit
from toolkit.cache import cached_response

MODEL = "gpt-4o-mini"
AGENT = "support"
INPUT_TOKENS = 40
OUTPUT_TOKENS = 30
COST = 0.0004
BLOCK_SECONDS = 0.3
"""How long ``/block`` holds the loop: well past the 100 ms threshold, so the watchdog
samples its stack even on a crowded machine."""
SLOW_INSERT = "insert into notes values (pause(?))"
_BLOCKING_MARKER = "# blocks the loop"


def _blocking_call() -> tuple[str, int, str]:
    here = Path(__file__).resolve()
    lines = here.read_text().splitlines()
    (line,) = [i + 1 for i, text in enumerate(lines) if text.endswith(_BLOCKING_MARKER)]
    return str(here), line, "block"


BLOCKING_CALL = _blocking_call()
"""(file, line, function) of ``/block``'s synchronous write: what a blocked-loop report names."""


class Sandbox:
    """Stands for a per-run resource (a sandbox, an MCP session)."""

    async def aclose(self) -> None: ...


def status_app(
    settings: toolkit.ToolkitSettings | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
) -> FastAPI:
    """The app, installed with ``settings`` (from the environment when None)."""
    app = FastAPI()
    notes = sqlite3.connect(":memory:", check_same_thread=False)
    notes.create_function("pause", 1, time.sleep)  # a slow write, as on a busy disk
    notes.execute("create table notes (text text)")
    sandboxes = toolkit.AgentPool(Sandbox, name="sandbox", size=2, warm=1)

    def tracer() -> trace.Tracer:
        return trace.get_tracer(
            "tests.apps.status", tracer_provider=installed.telemetry.tracer_provider
        )

    @toolkit.resilient(breaker="llm", timeout=None)
    async def call_model(prompt: str) -> str:
        with tracer().start_as_current_span(f"chat {MODEL}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": MODEL,
                    "gen_ai.usage.input_tokens": INPUT_TOKENS,
                    "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
                    "toolkit.gen_ai.cost": COST,
                }
            )
            await asyncio.sleep(0.005)
            return f"answer to {prompt}"

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/chat/{session}")
    async def chat(session: str) -> dict[str, str]:
        """One agent run: a tool step, then a model call, with a pooled sandbox."""
        with tracer().start_as_current_span(f"invoke_agent {AGENT}") as agent:
            agent.set_attributes(
                {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT}
            )
            async with sandboxes.acquire():
                with tracer().start_as_current_span("execute_tool search") as tool:
                    tool.set_attributes(
                        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
                    )
                    await asyncio.sleep(0.002)
                answer = await call_model(session)
        return {"answer": answer}

    @app.get("/answers/{answer_id}")
    @cached_response(ttl="1m")
    async def answer(answer_id: str) -> dict[str, str]:
        await asyncio.sleep(0.01)
        return {"answer": answer_id}

    @app.get("/slow")
    async def slow(seconds: float = 0.05) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @app.get("/block")
    async def block() -> dict[str, float]:
        with notes:
            notes.execute(SLOW_INSERT, (BLOCK_SECONDS,))  # blocks the loop
        return {"blocked": BLOCK_SECONDS}

    @app.get("/fail")
    async def fail() -> dict[str, str]:
        raise HTTPException(503, "the model provider is down")

    installed = toolkit.install(app, settings, tracer_provider=tracer_provider, pools=[sandboxes])
    return app
