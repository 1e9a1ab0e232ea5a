"""``agent-toolkit flags``: read and change flags on the configured backend."""

from __future__ import annotations

import argparse
import getpass
import json
import time
from typing import Any

from toolkit.backends import Backend
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags._setup import flag_store_from_settings
from toolkit.settings import ToolkitSettings


def add_commands(commands: Any) -> None:
    """Register ``flags list|get|set|rollout|reset|history`` on the CLI's subparsers."""
    flags = commands.add_parser("flags", help="read and change feature flags")
    actions = flags.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every flag with its default and override")
    get = actions.add_parser("get", help="one flag, as JSON")
    get.add_argument("key")
    set_ = actions.add_parser("set", help="serve one variant to everyone")
    set_.add_argument("key")
    set_.add_argument("variant")
    rollout = actions.add_parser("rollout", help="serve a variant to a share of callers")
    rollout.add_argument("key")
    rollout.add_argument("variant")
    rollout.add_argument("percentage", type=float)
    reset = actions.add_parser("reset", help="remove the override: back to the default")
    reset.add_argument("key")
    history = actions.add_parser("history", help="the newest changes")
    history.add_argument("--limit", type=int, default=20)
    for parser in (set_, rollout, reset):
        parser.add_argument(
            "--by", default=f"cli:{getpass.getuser()}", help="who made the change (recorded)"
        )


async def run(args: argparse.Namespace, settings: ToolkitSettings, backend: Backend) -> int:
    """Run the command on the fleet's ``backend`` (shared, not in process); close it after."""
    store = flag_store_from_settings(settings, backend)
    try:
        await store.load_declarations()
        await store.reload()
        if store.stale:
            raise BackendError("flags cannot be read", operation="flags.load", error_type="stale")
        return await _act(args, store)
    except BackendError as exc:
        print(f"the backend failed ({exc.error_type}); nothing was changed")
        return 1
    except ConfigurationError as exc:
        print(exc)
        return 2
    finally:
        await backend.close()


async def _act(args: argparse.Namespace, store: Any) -> int:
    if args.action == "list":
        for view in store.flags():
            override = view.state.to_json() if view.state else "-"
            print(f"{view.definition.key:24} default={view.default:10} override={override}")
    elif args.action == "get":
        store.definition(args.key)
        view = next(v for v in store.flags() if v.definition.key == args.key)
        print(json.dumps(view.as_dict(), indent=2))
    elif args.action == "set":
        await store.set(args.key, args.variant, by=args.by)
        print(f"{args.key}: {args.variant} for everyone")
    elif args.action == "rollout":
        await store.rollout(args.key, args.variant, args.percentage, by=args.by)
        print(f"{args.key}: {args.variant} for {args.percentage:g} % of callers")
    elif args.action == "reset":
        await store.reset(args.key, by=args.by)
        print(f"{args.key}: back to its default")
    else:
        for change in await store.history(args.limit):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change["at"]))
            print(
                f"{when}  {change['key']:24} {_state(change.get('old'))} -> "
                f"{_state(change.get('new'))}  by {change.get('by')}"
            )
    return 0


def _state(state: dict[str, Any] | None) -> str:
    if state is None:
        return "default"
    text = str(state["variant"])
    if state.get("rollout"):
        text += f" ({state['rollout']['variant']} for {state['rollout']['percentage']:g} %)"
    return text
