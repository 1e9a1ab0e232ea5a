"""``agent-toolkit breakers``: read and override circuit breakers on the configured backend.

What operators reach for during an incident, without code: force a breaker open when a
provider is known down, closed when it refuses a provider that is back, and reset it after.
Every instance follows within a second (the change is announced on the backend).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from toolkit.backends import Backend
from toolkit.backends.breaker_state import DISABLED, FORCED_CLOSED, FORCED_OPEN, NOT_FORCED
from toolkit.errors import BackendError
from toolkit.resilience.breaker import BREAKER_CHANNEL
from toolkit.settings import ToolkitSettings

_ACTIONS = {
    "force-open": (FORCED_OPEN, "refuses every call on every instance until reset"),
    "force-closed": (FORCED_CLOSED, "lets every call through (still counted) until reset"),
    "disable": (DISABLED, "passes every call through uncounted until reset"),
    "reset": (NOT_FORCED, "back to normal: closed, with an empty window"),
}


def add_commands(commands: Any) -> None:
    """Register ``breakers get|force-open|force-closed|disable|reset NAME``."""
    breakers = commands.add_parser("breakers", help="read and override circuit breakers")
    actions = breakers.add_subparsers(dest="action", required=True)
    actions.add_parser("get", help="a breaker's stored state, as JSON").add_argument("name")
    for action, (_, meaning) in _ACTIONS.items():
        actions.add_parser(action, help=meaning).add_argument("name")


async def run(args: argparse.Namespace, settings: ToolkitSettings, backend: Backend) -> int:
    """Run the command on the fleet's ``backend`` (shared, not in process); close it after."""
    del settings  # the backend is all it needs
    try:
        if args.action == "get":
            view = await backend.breaker_read(args.name)
        else:
            forced, meaning = _ACTIONS[args.action]
            view = await backend.breaker_force(args.name, forced, channel=BREAKER_CHANNEL)
            print(f"{args.name}: {meaning}")
    except BackendError as exc:
        print(f"the backend failed ({exc.error_type}); nothing was changed")
        return 1
    finally:
        await backend.close()
    print(
        json.dumps(
            {
                "name": args.name,
                "state": view.state,
                "forced": view.forced or None,
                "open_until_ms": view.until or None,
            }
        )
    )
    return 0
