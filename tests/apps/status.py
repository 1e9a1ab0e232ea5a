"""An agent server with traffic for every section of the status page.

Run as ``uvicorn --factory tests.apps.status:status_app`` with ``TOOLKIT_ADMIN__TOKENS`` (and
``TOOLKIT_ADMIN__READ_TOKENS``) set; the unit tests build it with their settings. Its agent is
traced by hand with the GenAI span names and attributes the toolkit's agent layer emits
(``invoke_agent {name}``, ``chat {model}``, ``execute_tool {name}``), on the toolkit's tracer
provider; a sleep-drift probe stands for the event-loop monitor, connected where the monitor
connects. ``/block`` blocks the loop with a synchronous sleep, as a sqlite write would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import toolkit
from toolkit.cache import cached_response
from toolkit.telemetry.status import BlockedLoop, LoopHealth

MODEL = "gpt-4o-mini"
AGENT = "support"
INPUT_TOKENS = 40
OUTPUT_TOKENS = 30
COST = 0.0004


class SleepDriftProbe:
    """How late a 20 ms sleep wakes, the last 100 times: a minimal event-loop monitor."""

    def __init__(self) -> None:
        self.lags: deque[float] = deque(maxlen=100)
        self.blocked: deque[BlockedLoop] = deque(maxlen=5)

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.02)
            lag = time.perf_counter() - started - 0.02
            self.lags.append(lag)
            if lag > 0.1:
                # A sleep-drift probe sees that the loop was late, not where: the real
                # monitor's watchdog thread samples the stack.
                stack = "(this probe samples no stacks)"
                self.blocked.appendleft(BlockedLoop(time.time(), lag, stack, task="block"))

    def loop_health(self) -> LoopHealth:
        ordered = sorted(self.lags)
        if not ordered:
            return LoopHealth(None, None, None, len(asyncio.all_tasks()))
        return LoopHealth(
            lag_p50=ordered[len(ordered) // 2],
            lag_p99=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            lag_max=ordered[-1],
            tasks=len(asyncio.all_tasks()),
            blocked=tuple(self.blocked),
        )


class Sandbox:
    """Stands for a per-run resource (a sandbox, an MCP session)."""

    async def aclose(self) -> None: ...


def status_app(
    settings: toolkit.ToolkitSettings | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    loop_monitor: bool = True,
) -> FastAPI:
    """The app, installed with ``settings`` (from the environment when None); with
    ``loop_monitor``, a sleep-drift probe runs with it and feeds the status board."""
    probe = SleepDriftProbe()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(probe.run())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan if loop_monitor else None)
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
    async def block() -> dict[str, str]:
        time.sleep(0.15)  # noqa: ASYNC251 - the blocking call the status page must show
        return {"blocked": "150ms"}

    @app.get("/fail")
    async def fail() -> dict[str, str]:
        raise HTTPException(503, "the model provider is down")

    installed = toolkit.install(app, settings, tracer_provider=tracer_provider, pools=[sandboxes])
    if loop_monitor and installed.status is not None:
        installed.status.loop_monitor = probe  # where install() will connect the real monitor
    return app
