"""Load comparison: every configuration of ``tests/benchmarks/apps.py`` under ``wrk``.

    python -m tests.benchmarks.load [--duration 10] [--rounds 3] [--only bare,toolkit-redis]

One redis-server, and one single-worker uvicorn process per configuration. Rounds are
interleaved (each round visits every configuration, starting one further along) so that drift
on a small, noisy machine spreads over all of them; each figure is the median over rounds.
What the project promises are ratios between configurations measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx

from tests.benchmarks.apps import CONFIGURATIONS
from tests.support.servers import ROOT, RedisServer, UvicornServer

APP = "tests.benchmarks.apps:app"
ANCHOR = "bare"
DEFAULT_OUTPUT = ROOT / ".bench" / "results.md"
# Variables that would change what a configuration runs: toolkit settings, OpenTelemetry SDK
# configuration, FastAPI's automatic OpenTelemetry set-up.
_FOREIGN_ENV = ("TOOLKIT_", "OTEL_", "FASTAPI_OTEL_")
_CHECK_REQUESTS = 200
# A response header that shows the limiter decided the request (its own fields).
_LIMITER_HEADER = {
    "toolkit-memory": "ratelimit",
    "toolkit-redis": "ratelimit",
    "slowapi-memory": "x-ratelimit-limit",
    "slowapi-redis": "x-ratelimit-limit",
    "toolkit-cache-redis": "x-cache",
}
_USES_REDIS = frozenset(
    (
        "toolkit-redis",
        "slowapi-redis",
        "slowapi-redis-noheaders",
        "toolkit-cache-redis",
        "cashews-redis",
        "aiocache-redis",
    )
)
_TRACED = frozenset(("toolkit-telemetry", "otel-fastapi"))


@dataclass(frozen=True)
class Target:
    """The project's promise: ``numerator`` serves at least ``minimum`` x ``denominator``."""

    numerator: str
    denominator: str
    minimum: float

    @property
    def label(self) -> str:
        return f"{self.numerator} / {self.denominator}"


TARGETS = (
    Target("toolkit-redis", "slowapi-redis", 2.0),
    Target("toolkit-memory", "slowapi-memory", 1.4),
    Target("toolkit-telemetry", "otel-fastapi", 2.0),
    Target("toolkit-cache-redis", "cashews-redis", 1.2),
    Target("toolkit-cache-redis", "aiocache-redis", 1.2),
)


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    p99_ms: float


class BenchmarkError(Exception):
    """A run that cannot be trusted: errors, non-200 answers, a misconfigured server."""


@dataclass(frozen=True)
class Wrk:
    threads: int
    connections: int
    timeout: int | None = None
    """Seconds wrk waits for an answer (its default, 2 s, when None)."""

    def command(self, url: str, seconds: int) -> list[str]:
        timeout = [] if self.timeout is None else [f"--timeout={self.timeout}s"]
        return [
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds}s",
            *timeout,
            "--latency",
            url,
        ]

    def run(self, url: str, seconds: int) -> Run:
        command = self.command(url, seconds)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            raise BenchmarkError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return parse_wrk(done.stdout)


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_FAILURES = re.compile(r"^\s+(Non-2xx or 3xx responses: \d+|Socket errors: .*)$", re.MULTILINE)


def parse_wrk(output: str) -> Run:
    """Requests/sec and the 99th percentile of ``wrk --latency``; any failed request fails it."""
    failures = _FAILURES.findall(output)
    if failures:
        raise BenchmarkError(f"wrk saw failed requests ({'; '.join(failures)}):\n{output}")
    rps, p99 = _RPS.search(output), _P99.search(output)
    if rps is None or p99 is None:
        raise BenchmarkError(f"unexpected wrk output:\n{output}")
    return Run(float(rps.group(1)), float(p99.group(1)) * _UNIT_MS[p99.group(2)])


def check_configuration(name: str, base_url: str, redis: RedisServer | None) -> None:
    """The server runs ``name`` as it claims: every answer 200, the limiter deciding (its
    fields, its keys in Redis), the telemetry recording, and no global OpenTelemetry provider.
    """
    if name in _USES_REDIS and redis is not None:
        redis.flush()
    with httpx.Client(base_url=base_url, timeout=5) as client:
        health = client.get("/health").json()
        if health != {"app": name, "global_providers": False}:
            raise BenchmarkError(f"{name}: /health answered {health}")
        responses = [client.get("/bench") for _ in range(_CHECK_REQUESTS)]
        statuses = Counter(response.status_code for response in responses)
        if statuses != {200: _CHECK_REQUESTS}:
            raise BenchmarkError(f"{name}: /bench answered {dict(statuses)}, expected only 200")
        header = _LIMITER_HEADER.get(name)
        if header is not None and header not in responses[-1].headers:
            raise BenchmarkError(f"{name}: /bench has no {header} field: the limiter is off")
        if name in _TRACED and '="/bench"' not in client.get("/metrics").text:
            raise BenchmarkError(f"{name}: /metrics has no series for /bench: telemetry is off")
    if name in _USES_REDIS and redis is not None:
        with redis.client() as redis_client:
            if not redis_client.dbsize():
                raise BenchmarkError(f"{name}: nothing was written to Redis")


def measure(
    servers: Mapping[str, UvicornServer], wrk: Wrk, *, duration: int, warmup: int, rounds: int
) -> dict[str, list[Run]]:
    """``rounds`` interleaved runs of every server, each after a warm-up run of its own."""
    names = list(servers)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            url = servers[name].base_url + "/bench"
            wrk.run(url, warmup)
            run = wrk.run(url, duration)
            runs[name].append(run)
            print(
                f"round {index + 1}/{rounds} {name:<24} {run.requests_per_second:>9.0f} req/s "
                f"p99 {run.p99_ms:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    return runs


def _ratio(runs: Mapping[str, list[Run]], numerator: str, denominator: str) -> float | None:
    if numerator not in runs or denominator not in runs:
        return None
    return _median_rps(runs[numerator]) / _median_rps(runs[denominator])


def _round_ratios(runs: Mapping[str, list[Run]], target: Target) -> list[float]:
    """The ratio within each round: how much of the result is noise."""
    return [
        a.requests_per_second / b.requests_per_second
        for a, b in zip(runs[target.numerator], runs[target.denominator], strict=True)
    ]


def _median_rps(runs: Sequence[Run]) -> float:
    return statistics.median(run.requests_per_second for run in runs)


def results_table(runs: Mapping[str, list[Run]]) -> str:
    lines = [
        "| configuration | requests/s (median) | p99 (median) | vs bare |",
        "|---|---:|---:|---:|",
    ]
    for name, name_runs in runs.items():
        ratio = _ratio(runs, name, ANCHOR)
        lines.append(
            f"| {name} | {_median_rps(name_runs):,.0f} "
            f"| {statistics.median(run.p99_ms for run in name_runs):.2f} ms "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines)


def targets_table(runs: Mapping[str, list[Run]]) -> str:
    lines = [
        "| promise | ratio (of medians) | range over rounds | target | |",
        "|---|---:|---:|---:|---|",
    ]
    for target in TARGETS:
        ratio = _ratio(runs, target.numerator, target.denominator)
        if ratio is None:
            continue
        per_round = _round_ratios(runs, target)
        lines.append(
            f"| {target.label} | {ratio:.2f} | {min(per_round):.2f}-{max(per_round):.2f} "
            f"| >= {target.minimum} | {'met' if ratio >= target.minimum else 'NOT MET'} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def describe_setup(wrk: Wrk, args: argparse.Namespace, redis_version: str | None) -> str:
    command = " ".join(wrk.command("http://127.0.0.1:<port>/bench", args.duration))
    redis = f", Redis {redis_version} on loopback" if redis_version else ""
    return (
        f"`{command}`, {args.rounds} interleaved rounds after a {args.warmup} s warm-up each, "
        f"medians; one uvicorn worker per configuration. {date.today().isoformat()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}{redis}."
    )


def report(runs: Mapping[str, list[Run]], setup: str) -> str:
    parts = ["## Load comparison", setup, results_table(runs), targets_table(runs)]
    return "\n\n".join(part for part in parts if part) + "\n"


def clean_environment() -> None:
    """Drop the variables that would change what a server runs."""
    for variable in list(os.environ):
        if variable.startswith(_FOREIGN_ENV):
            del os.environ[variable]


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise BenchmarkError(f"{binary} is not installed; `make bench` installs it")
    return path


def _redis_version(server: RedisServer) -> str:
    with server.client() as client:
        return str(client.info("server")["redis_version"])


def run_benchmark(args: argparse.Namespace) -> str:
    """Start the servers, check and measure them; the report in markdown."""
    _require("wrk")
    clean_environment()
    wrk = Wrk(args.threads, args.connections)
    with ExitStack() as stack:
        env = {}
        redis = redis_version = None
        if _USES_REDIS.intersection(args.only):
            redis = RedisServer(_require("redis-server"))
            redis.start()
            stack.callback(redis.stop)
            env["BENCH_REDIS_URL"] = redis.url
            redis_version = _redis_version(redis)
        servers = {
            name: stack.enter_context(UvicornServer(APP, env={**env, "BENCH_APP": name}))
            for name in args.only
        }
        for name, server in servers.items():
            check_configuration(name, server.base_url, redis)
        runs = measure(servers, wrk, duration=args.duration, warmup=args.warmup, rounds=args.rounds)
    return report(runs, describe_setup(wrk, args, redis_version))


def _configurations(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown configuration {', '.join(unknown) or value!r}; "
            f"choose from {', '.join(CONFIGURATIONS)}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.load", description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument(
        "--only",
        type=_configurations,
        default=list(CONFIGURATIONS),
        help="comma-separated configurations (default: all)",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup <= 0:
        parser.error("--rounds, --duration and --warmup must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        markdown = run_benchmark(args)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(markdown)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
