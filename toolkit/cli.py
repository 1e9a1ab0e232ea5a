"""``agent-toolkit``: check and show the configuration an app would start with.

agent-toolkit settings   # the resolved settings (TOOLKIT_*, toolkit.toml, defaults), as JSON
agent-toolkit doctor     # validate them and reach the backend; exit 1 if something is wrong
agent-toolkit dashboards # write the bundled Grafana dashboards (--output DIR, default ./dashboards)
agent-toolkit flags      # list | get | set | rollout | reset | history, on the configured backend
agent-toolkit breakers   # get | force-open | force-closed | disable | reset NAME, fleet-wide
agent-toolkit top URL    # a running server's status page, live in the terminal (admin/_top.py)
agent-toolkit worker APP # run the durable queue's deferred tasks (deferred/durable/_cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

from toolkit._version import __version__
from toolkit.admin import _top as top_cli
from toolkit.backends import backend_from_settings
from toolkit.backends.base import redacted_url
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags import _cli as flags_cli
from toolkit.pipelines.deferred.durable import _cli as worker_cli
from toolkit.resilience import _cli as breakers_cli
from toolkit.settings import ToolkitSettings
from toolkit.telemetry.dashboards import write_dashboards


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent-toolkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("settings", help="print the resolved settings as JSON")
    commands.add_parser("doctor", help="validate the settings and reach the backend")
    dashboards = commands.add_parser("dashboards", help="write the bundled Grafana dashboards")
    dashboards.add_argument(
        "--output", default="dashboards", help="directory to write to (default: ./dashboards)"
    )
    flags_cli.add_commands(commands)
    breakers_cli.add_commands(commands)
    top_cli.add_command(commands)
    worker_cli.add_command(commands)
    args = parser.parse_args(argv)
    if args.command == "dashboards":
        for path in write_dashboards(args.output):
            print(path)
        return 0
    if args.command == "top":  # a running server's settings, not this shell's
        return top_cli.run(args)
    try:
        settings = ToolkitSettings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.command == "settings":
        print(json.dumps(_redacted(settings), indent=2))
        return 0
    if args.command == "worker":
        return worker_cli.run(args, settings)
    if args.command in _FLEET_COMMANDS:
        backend = backend_from_settings(settings.backend)
        if backend.in_process:
            # This process's memory is not the fleet's: a change would reach no one, and what
            # it reads is no running process's state.
            print(
                f"backend.url is {settings.backend.url}: each process keeps its own "
                f"{args.command}, out of this command's reach; nothing was read or changed. "
                "Share them with TOOLKIT_BACKEND__URL=redis://..."
            )
            return 2
        return asyncio.run(_FLEET_COMMANDS[args.command](args, settings, backend))
    return asyncio.run(_doctor(settings))


_FLEET_COMMANDS: Final = {"flags": flags_cli.run, "breakers": breakers_cli.run}
"""The commands that read and change the fleet's state, on a shared backend only."""


async def _doctor(settings: ToolkitSettings) -> int:
    print("settings: valid")
    backend = backend_from_settings(settings.backend)
    if backend.in_process:
        print(
            f"warning: backend {settings.backend.url} is per process: each process (each "
            "worker) keeps its own rate limits, caches, flags and breakers, and the flags and "
            "breakers commands cannot reach them. For more than one process set "
            "TOOLKIT_BACKEND__URL=redis://..."
        )
        return 0
    try:
        await backend.ping()
    except BackendError as exc:
        where = redacted_url(settings.backend.url)
        print(f"backend {where}: unreachable ({exc.error_type}): {exc.__cause__}")
        return 1
    finally:
        await backend.close()
    print(f"backend {redacted_url(settings.backend.url)}: reachable")
    return 0


def _redacted(settings: ToolkitSettings) -> dict[str, Any]:
    data = settings.model_dump(mode="json")
    data["backend"]["url"] = redacted_url(settings.backend.url)
    if settings.defer.durable.url is not None:
        data["defer"]["durable"]["url"] = redacted_url(settings.defer.durable.url)
    return data


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
