"""The layered memory service under a steady load, without the toolkit and then with it, where an
operator switches the semantic layer off and then bypasses the buffer while the load runs.

    python -m examples layered-memory [--duration 4]   # both phases, then the tables
    python -m examples layered-memory --serve          # the app with the toolkit, until Ctrl-C

Each phase runs ``examples/layered_memory/app.py`` in its own uvicorn process and drives it
with ``USERS`` users, each asking for the context of a new message every ``INTERVAL``. In the
"after" phase an operator flips ``memory.layer.semantic`` off at half time and ``memory.buffer``
off at three quarters, through the admin API (``PUT /_toolkit/flags/<key>``) with a token
that may change flags, as ``agent-toolkit flags set`` would on a shared backend.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx

from examples._harness import (
    ADMIN,
    Client,
    Metrics,
    Row,
    Server,
    Traffic,
    comparison,
    demo_main,
    drive,
    every,
)
from examples.layered_memory.app import BUILD_TIME, LAYERS, OPERATOR, OPERATOR_TOKEN_VARIABLE

APP = "examples.layered_memory.app:app"
USERS = 6
INTERVAL = 0.2  # seconds between one user's messages
# What the operator switches off, and when (the share of the phase gone by).
FLIPS = (("memory.layer.semantic", 0.5), ("memory.buffer", 0.75))
MESSAGES = (
    "I moved to Lyon last spring",
    "my sister lives in Lyon too",
    "remind me to water the plants",
    "the plants are on the balcony",
    "I started learning the cello",
    "cello lessons are on Tuesdays",
)


@dataclass(frozen=True)
class Answer:
    """One recall as the client saw it: when it was sent and answered (seconds from the
    phase's start), and which path the server says the message took."""

    sent: float
    answered: float
    status: int
    buffered: bool | None = None
    layers: tuple[str, ...] = ()

    @property
    def latency(self) -> float:
        return self.answered - self.sent


@dataclass(frozen=True)
class Flip:
    """An operator's change: the flag, when the request was sent and when it was answered."""

    key: str
    sent: float
    answered: float
    status: int


@dataclass
class Phase:
    answers: list[Answer] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)  # the app's model calls, per path
    metrics: Metrics | None = None  # the after server's, as its load ended
    status_page: int = 0  # what its status page answered the read-only token

    def traffic(self, answers: Sequence[Answer] | None = None) -> Traffic:
        traffic = Traffic()
        for answer in self.answers if answers is None else answers:
            traffic.record(answer.status, answer.latency)
        return traffic

    def segments(self) -> list[tuple[str, list[Answer]]]:
        """The answers grouped by the flags in force: those sent after a flip was answered
        and before the next one was sent (a recall sent during a flip is in none)."""
        bounds = [(-math.inf, "every flag on")]
        bounds += [(flip.answered, f"{flip.key} off") for flip in self.flips]
        starts = [flip.sent for flip in self.flips] + [math.inf]
        return [
            (label, [a for a in self.answers if begin <= a.sent and a.answered < end])
            for (begin, label), end in zip(bounds, starts, strict=True)
        ]


@dataclass(frozen=True)
class Demo:
    duration: float
    before: Phase
    after: Phase
    status_url: str


def _user(number: int, start: float, out: Phase) -> Client:
    user_id = f"user-{number}"
    sent = 0

    async def recall(http: httpx.AsyncClient) -> None:
        nonlocal sent
        message = MESSAGES[(number + sent) % len(MESSAGES)]
        sent += 1
        began = time.monotonic() - start
        try:
            response = await http.post("/recall", json={"user_id": user_id, "message": message})
        except httpx.HTTPError:
            out.answers.append(Answer(began, time.monotonic() - start, 0))
            return
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        out.answers.append(
            Answer(
                began,
                time.monotonic() - start,
                response.status_code,
                body.get("buffered"),
                tuple(body.get("layers", ())),
            )
        )

    return every(INTERVAL, recall)


def _operator(duration: float, start: float, token: str, out: Phase) -> Client:
    async def flip_flags(http: httpx.AsyncClient, deadline: float) -> None:
        for key, share in FLIPS:
            await asyncio.sleep(max(0.0, start + share * duration - time.monotonic()))
            sent = time.monotonic() - start
            response = await http.put(
                f"{ADMIN}/flags/{key}",
                json={"variant": "off"},
                headers={"Authorization": f"Bearer {token}"},
            )
            out.flips.append(Flip(key, sent, time.monotonic() - start, response.status_code))

    return flip_flags


def _phase(mode: Literal["before", "after"], duration: float) -> tuple[Phase, str]:
    out, token = Phase(), secrets.token_urlsafe(18)
    with Server(APP, mode=mode, env={OPERATOR_TOKEN_VARIABLE: token}) as server:
        start = time.monotonic()
        clients = [_user(number, start, out) for number in range(USERS)]
        if mode == "after":
            clients.append(_operator(duration, start, token, out))
        drive(server.url, duration, clients)
        out.calls = cast(dict[str, int], server.get_json("/_demo/calls"))
        if mode == "after":
            out.metrics = server.metrics()
            out.status_page = server.read_status("/status").status_code
    return out, server.status_url


def run(duration: float) -> Demo:
    before, _ = _phase("before", duration)
    after, status_url = _phase("after", duration)
    return Demo(duration, before, after, status_url)


def _ms(seconds: float) -> float:
    return seconds * 1000


def _mean(answers: Sequence[Answer]) -> float:
    return sum(a.latency for a in answers) / len(answers) if answers else math.nan


def report(demo: Demo) -> str:
    before, after = demo.before, demo.after
    (_, all_on), *_ = after.segments()
    assert after.metrics is not None
    built = after.metrics.total("toolkit_pool_create_time_seconds_count")
    rows = [
        Row("recalls answered", before.traffic().ok, after.traffic().ok),
        Row("services built", before.traffic().requests, built),
        Row("critical path p50, every layer on", _ms(before.traffic().p50),
            _ms(Phase(all_on).traffic().p50), "ms"),
        Row("critical path mean, every layer on", _ms(_mean(before.answers)), _ms(_mean(all_on)),
            "ms"),
        Row("model calls", sum(before.calls.values()), sum(after.calls.values())),
    ]  # fmt: skip
    lines = [
        f"examples/layered_memory/app.py, {demo.duration:g} s of traffic per phase:",
        f"  {USERS} users, each asking for the context of a new message every "
        f"{_ms(INTERVAL):.0f} ms",
        f"before:  the app alone; it builds the user's service ({_ms(BUILD_TIME):.0f} ms) for "
        "every request;",
        "         its layers and its buffer are fixed at startup",
        "after:   per-user services from a keyed pool (toolkit.AgentPool, @toolkit.pooled),",
        "         the buffer and each layer behind a flag (toolkit.flags), a span per layer",
        "         (toolkit.step); an operator flips "
        + " then ".join(f"{key} off at {share:.0%}" for key, share in FLIPS),
        "",
        *comparison(rows),
        "",
        "after, by the flags in force (a recall sent while a flip was on its way is in none):",
        f"{'flags':<26}{'from s':>7}{'recalls':>9}{'p50 ms':>8}{'mean ms':>9}  path",
    ]
    for (label, answers), begin in zip(
        after.segments(), [0.0, *(flip.answered for flip in after.flips)], strict=True
    ):
        paths = sorted({(a.buffered, a.layers) for a in answers if a.status == 200})
        shown = "; ".join(
            f"{'buffer, ' if buffered else ''}{', '.join(layers) or 'no layer'}"
            for buffered, layers in paths
        )
        lines.append(
            f"{label:<26}{begin:>7.2f}{len(answers):>9}{_ms(Phase(answers).traffic().p50):>8.0f}"
            f"{_ms(_mean(answers)):>9.0f}  {shown}"
        )
    steps = after.metrics.by("toolkit_agent_step_duration_seconds_count", "toolkit_step_name")
    lines += [
        "",
        "Per path: the after server's spans (toolkit_agent_step_duration_seconds_count), the",
        "model's calls (GET /_demo/calls):",
        *(
            f"  {path:<10}spans {steps.get(f'memory.{path}', 0):>5.0f}   model calls "
            f"before {before.calls.get(path, 0):>5}  after {after.calls.get(path, 0):>5}"
            for path in ("buffer", *LAYERS)
        ),
        "flag changes the after server applied: "
        + ", ".join(
            f"{labels['feature_flag_key']} {value:.0f}"
            for labels, value in after.metrics.samples("toolkit_feature_flag_changes_total")
        ),
        "",
        f"The after server's status page was {demo.status_url} (read-only token); the flags",
        "page is beside it. Both stopped with the demo: make demo layered-memory ARGS=--serve",
    ]
    return "\n".join(lines)


def serve(port: int) -> Server:
    token = secrets.token_urlsafe(18)
    server = Server(APP, mode="after", port=port, env={OPERATOR_TOKEN_VARIABLE: token})
    print(f"flags page: {server.url}{ADMIN}/  (sign in as {OPERATOR!r} with the token {token})")
    print(
        f"  flip a layer: curl -X PUT {server.url}{ADMIN}/flags/memory.layer.semantic "
        f"-H 'Authorization: Bearer {token}' -H 'content-type: application/json' "
        """-d '{"variant": "off"}'"""
    )
    print(
        f"  recall: curl {server.url}/recall -H 'content-type: application/json' "
        """-d '{"user_id": "u1", "message": "I moved to Lyon"}'"""
    )
    return server


def main(argv: Sequence[str] | None = None) -> int:
    return demo_main(
        argv, prog="python -m examples layered-memory", description=__doc__, run=run,
        report=report, serve=serve,
    )  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main())
