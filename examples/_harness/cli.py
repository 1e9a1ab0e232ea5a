"""The command line every demo shares: both phases then the report, or ``--serve``."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from examples._harness.server import STATUS_USER, Server

Result = TypeVar("Result")


def demo_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    run: Callable[[float], Result],
    report: Callable[[Result], str],
    serve: Callable[[int], Server] | None = None,
    duration: float = 4.0,
) -> int:
    """Parse ``--duration`` / ``--serve`` / ``--port``; print ``report(run(duration))``, or
    keep ``serve(port)`` (the "after" server, not yet started) up until Ctrl-C."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--duration", type=float, default=duration, help="seconds per phase")
    if serve is not None:
        parser.add_argument("--serve", action="store_true", help="run the app with the toolkit")
        parser.add_argument("--port", type=int, default=0, help="--serve port (default: free)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be more than 0 seconds")
    # Servers run in sessions of their own; on SIGTERM too, unwind so that they are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        if serve is not None and args.serve:
            return serve_until_interrupted(serve(args.port))
        print(report(run(args.duration)), flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


def serve_until_interrupted(server: Server) -> int:
    """Start ``server``, print where it is and how to sign in to its status page, and wait."""
    with server:
        assert server.process is not None
        print(f"{server.app} with the toolkit on {server.url}  (Ctrl-C stops it)")
        print(f"metrics: {server.url}/metrics")
        print(f"status page: {server.status_url}")
        print(f"  sign in as {STATUS_USER!r} with the read-only token {server.status_token}")
        sys.stdout.flush()
        try:
            return server.process.wait()
        except KeyboardInterrupt:
            print("\nstopping the server")
            return 0
