"""Throughput of a route whose agent costs 100 ms to build, pooling on and off, over real HTTP:
``python -m tests.benchmarks.pool_throughput [--duration 3] [--rounds 1] [--builds io,cpu]``.

The route is ``tests/benchmarks/pool_app.py`` (``AgentPool(size=8, warm=8)``, ``@pooled``,
``install()`` defaults), served by one single-worker uvicorn process per measurement, driven by
``wrk`` with ``--connections`` connections. Pooling off is the same app started with
``TOOLKIT_FLAGS__DEFAULTS='{"pool": "off"}'``: every request builds its agent. Each process runs
alone (a pooling-off server keeps building for requests wrk gave up on, which would take CPU
from the next measurement), checked first: the flag variant it serves and whether requests
build agents. The promise (issue 5): pooling on serves at least 10x the requests of pooling off.

With ``io`` builds the loop is free while an agent builds, so pooling off serves about
connections / 0.1 s; with ``cpu`` builds every build holds the loop, so about 10 per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date

import httpx

from tests.benchmarks.load import BenchmarkError, Run, Wrk, clean_environment
from tests.support.servers import UvicornServer

APP = "tests.benchmarks.pool_app:app"
TARGET = 10.0
BUILDS = ("io", "cpu")
SIDES = ("on", "off")
_WARM = 8
_CHECK_REQUESTS = 20
_IDLE_SECONDS = 0.02
# Pooling off with cpu builds answers in connections x 100 ms: past wrk's 2 s default.
WRK_TIMEOUT = 30


def environment(build: str, side: str) -> dict[str, str]:
    """What the server's environment adds to this one (cleaned by :func:`main`)."""
    env = {"BENCH_POOL_BUILD": build}
    if side == "off":
        env["TOOLKIT_FLAGS__DEFAULTS"] = '{"pool": "off"}'
    return env


def check(base_url: str, build: str, side: str) -> None:
    """The server builds as asked and pools as asked: on, the warm agents serve every
    request; off, every request builds one."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        before = client.get("/health").json()
        if (before["build"], before["pool"], before["built"]) != (build, side, _WARM):
            raise BenchmarkError(f"pooling {side}, {build} builds: /health answered {before}")
        for _ in range(_CHECK_REQUESTS):
            response = client.get("/agent")
            if response.status_code != 200 or response.json() != {"output": "echo: hello"}:
                raise BenchmarkError(f"/agent answered {response.status_code}: {response.text}")
        built = client.get("/health").json()["built"] - _WARM
    expected = 0 if side == "on" else _CHECK_REQUESTS
    if built != expected:
        raise BenchmarkError(f"pooling {side}: {_CHECK_REQUESTS} requests built {built} agents")


def measure_one(build: str, side: str, wrk: Wrk, *, duration: int, warmup: int) -> Run:
    with UvicornServer(APP, env=environment(build, side)) as server:
        check(server.base_url, build, side)
        url = server.base_url + "/agent"
        wrk.run(url, warmup)
        drain(server.base_url)
        return wrk.run(url, duration)


def drain(base_url: str) -> None:
    """Wait until the server has finished what wrk left behind: requests wrk gave up on are
    still served (with cpu builds and pooling off, up to connections x 100 ms of work)."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(100):
            started = time.perf_counter()
            client.get("/health")
            if time.perf_counter() - started < _IDLE_SECONDS:
                return
    raise BenchmarkError(f"{base_url} stayed busy after the warm-up")


def measure(
    builds: Sequence[str], wrk: Wrk, *, duration: int, warmup: int, rounds: int
) -> dict[tuple[str, str], list[Run]]:
    """``rounds`` runs of each (build, side); within a round both sides run back to back,
    starting with a different side each round."""
    runs: dict[tuple[str, str], list[Run]] = {(b, s): [] for b in builds for s in SIDES}
    for index in range(rounds):
        for build in builds:
            sides = SIDES if index % 2 == 0 else SIDES[::-1]
            for side in sides:
                run = measure_one(build, side, wrk, duration=duration, warmup=warmup)
                runs[build, side].append(run)
                print(
                    f"round {index + 1}/{rounds} {build} build, pooling {side:<3} "
                    f"{run.requests_per_second:>8.1f} req/s p99 {run.p99_ms:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def _median_rps(runs: Sequence[Run]) -> float:
    return statistics.median(run.requests_per_second for run in runs)


def report(runs: dict[tuple[str, str], list[Run]], builds: Sequence[str], setup: str) -> str:
    results = [
        "| agent build (100 ms) | pooling | requests/s (median) | p99 (median) |",
        "|---|---|---:|---:|",
    ]
    for (build, side), side_runs in runs.items():
        p99 = statistics.median(run.p99_ms for run in side_runs)
        results.append(f"| {build} | {side} | {_median_rps(side_runs):,.1f} | {p99:,.1f} ms |")
    promises = [
        "| promise: pooling on / off | ratio (of medians) | range over rounds | target | |",
        "|---|---:|---:|---:|---|",
    ]
    for build in builds:
        on, off = runs[build, "on"], runs[build, "off"]
        ratio = _median_rps(on) / _median_rps(off)
        per_round = [
            a.requests_per_second / b.requests_per_second for a, b in zip(on, off, strict=True)
        ]
        promises.append(
            f"| {build} build | {ratio:,.1f} | {min(per_round):,.1f}-{max(per_round):,.1f} "
            f"| >= {TARGET:g} | {'met' if ratio >= TARGET else 'NOT MET'} |"
        )
    return (
        "\n\n".join(["## Pool throughput", setup, "\n".join(results), "\n".join(promises)]) + "\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.pool_throughput", description=__doc__
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds before each run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--builds",
        type=lambda value: [b.strip() for b in value.split(",") if b.strip()],
        default=list(BUILDS),
        help="comma-separated: io (awaited), cpu (on the event loop); default both",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup <= 0:
        parser.error("--rounds, --duration and --warmup must be positive")
    if not args.builds or not set(args.builds) <= set(BUILDS):
        parser.error(f"--builds: choose from {', '.join(BUILDS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("benchmark failed: wrk is not installed; `make bench` installs it", file=sys.stderr)
        return 1
    clean_environment()
    wrk = Wrk(args.threads, args.connections, WRK_TIMEOUT)
    command = " ".join(wrk.command("http://127.0.0.1:<port>/agent", args.duration))
    setup = (
        f"`{command}` after a {args.warmup} s warm-up, {args.rounds} round(s), medians; one "
        f"uvicorn worker, alone, per measurement. {date.today().isoformat()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}."
    )
    try:
        runs = measure(
            args.builds, wrk, duration=args.duration, warmup=args.warmup, rounds=args.rounds
        )
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(report(runs, args.builds, setup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
