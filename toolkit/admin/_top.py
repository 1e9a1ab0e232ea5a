"""``agent-toolkit top URL``: a running server's status in the terminal, redrawn every second.

It reads the server's ``/stats`` (under its admin path) with an admin token, a read-only one
being enough, and draws a compact table: routes, agents, models, caches, breakers, pools and
the event loop. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

TOKEN_VARIABLE: Final = "AGENT_TOP_TOKEN"
"""Where ``top`` finds the token when ``--token`` is not given (kept out of ``ps``)."""
_CLEAR: Final = "\x1b[H\x1b[J"
_FIX_WIDTH: Final = 80
"""Columns a blocked loop's fix is wrapped at (the table is cut at the terminal's width)."""


def add_command(commands: Any) -> None:
    top = commands.add_parser("top", help="show a running server's status live")
    top.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    top.add_argument(
        "--token",
        default=os.environ.get(TOKEN_VARIABLE),
        help=f"an admin token, read-only is enough (default: ${TOKEN_VARIABLE})",
    )
    top.add_argument(
        "--admin-path", default="/_toolkit", help="the server's admin.path (default: /_toolkit)"
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    top.add_argument("--count", type=int, default=None, help="stop after this many redraws")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Redraw until interrupted (or ``--count`` redraws); 1 when the first read fails."""
    if not args.token:
        print(f"agent-toolkit top needs a token: --token, or ${TOKEN_VARIABLE}", file=sys.stderr)
        return 1
    if args.interval <= 0 or (args.count is not None and args.count < 1):
        print("--interval must be above 0 and --count at least 1", file=sys.stderr)
        return 1
    url = args.url.rstrip("/") + "/" + args.admin_path.strip("/") + "/stats?traces=0"
    read = _reader(url, args.token)
    clear = _CLEAR if out.isatty() else ""
    drawn = 0
    try:
        while args.count is None or drawn < args.count:
            try:
                stats = read()
            except _Unreadable as exc:
                if drawn == 0:
                    print(f"agent-toolkit top: {url}: {exc}", file=sys.stderr)
                    return 1
                out.write(f"{clear}{url}: {exc} (retrying)\n")
            else:
                width = shutil.get_terminal_size((120, 40)).columns
                out.write(clear + render(stats, args.url, width) + ("" if clear else "\n"))
            out.flush()
            drawn += 1
            if args.count is None or drawn < args.count:
                time.sleep(args.interval)  # the CLI's own process, no event loop
    except KeyboardInterrupt:
        pass
    return 0


class _Unreadable(Exception):
    pass


def _reader(url: str, token: str) -> Callable[[], dict[str, Any]]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})

    def read() -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                stats: dict[str, Any] = json.load(response)
                return stats
        except urllib.error.HTTPError as exc:
            try:
                detail = json.load(exc).get("detail", "")
            except ValueError:
                detail = ""
            raise _Unreadable(f"{exc.code} {detail or exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _Unreadable(str(getattr(exc, "reason", exc))) from None

    return read


# --- drawing -----------------------------------------------------------------------------------


def render(stats: dict[str, Any], where: str, width: int = 120) -> str:
    """The table ``top`` draws for one ``/stats`` answer."""
    generated = time.strftime("%H:%M:%S", time.localtime(stats.get("generated_at", 0)))
    window = _seconds(stats.get("window"))
    lines = [f"agent-toolkit top  {where}  {generated}  last {window}", ""]
    lines += _table(
        ["ROUTE", "REQ", "REQ/S", "ERR", "P50", "P95", "P99", "MAX"],
        [
            [f"{r['method']} {r['route']}".strip(), r["count"], f"{r['throughput']:.2f}",
             _share(r["error_rate"]), _seconds(r["p50"]), _seconds(r["p95"]),
             _seconds(r["p99"]), _seconds(r["max"])]
            for r in stats.get("routes", [])
        ],
        "no requests yet",
    )  # fmt: skip
    for kind, label in (("agents", "AGENT"), ("models", "MODEL")):
        key = kind[:-1]
        lines += _table(
            [label, "CALLS", "ERR", "P50", "P95", "P99", "TOKENS IN", "OUT", "COST"],
            [
                [r[key], r["count"], _share(r["error_rate"]), _seconds(r["p50"]),
                 _seconds(r["p95"]), _seconds(r["p99"]), r["input_tokens"], r["output_tokens"],
                 f"{r['cost']:.4f}"]
                for r in stats.get(kind, [])
            ],
            f"no {kind} traced yet",
        )  # fmt: skip
    lines += _table(
        ["CACHE", "HIT RATIO", "HITS", "STALE", "MISSES"],
        [
            [r["cache"], _share(r["hit_ratio"]), r.get("hit", 0), r.get("stale", 0),
             r.get("miss", 0)]
            for r in stats.get("caches", [])
        ],
        "no cache decisions yet",
    )  # fmt: skip
    lines += _table(
        ["BREAKER", "STATE", "FORCED"],
        [[r["name"], r["state"], r["forced"] or "-"] for r in stats.get("breakers", [])],
        "no breakers used yet",
    )
    lines += _table(
        ["POOL", "IN USE", "IDLE", "WAITING", "SIZE"],
        [
            [r["name"], r["used"], r["idle"], r["pending"], "-" if r["size"] is None else r["size"]]
            for r in stats.get("pools", [])
        ],
        "no pools",
    )
    lines += _loop(stats.get("loop", {}))
    return "\n".join(line[:width] for line in lines) + "\n"


def _table(header: Sequence[str], rows: list[list[Any]], empty: str) -> list[str]:
    if not rows:
        return [f"{header[0]}: {empty}", ""]
    cells = [[str(cell) for cell in row] for row in [list(header), *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    drawn = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in cells
    ]
    return [*drawn, ""]


def _loop(loop: dict[str, Any]) -> list[str]:
    """The loop's line, then its last blocks, newest first, each led by the blocking call,
    and the fix when a call of the application blocked (the same for every such block)."""
    if not loop.get("running"):
        return ["LOOP: monitor not running"]
    if loop.get("failure"):
        return [f"LOOP: monitor failed: {loop['failure']}"]
    lag = loop.get("lag", {})
    off = "" if loop.get("recording", True) else "  (recording off)"
    line = (
        f"LOOP: lag p50 {_seconds(lag.get('p50'))}  p99 {_seconds(lag.get('p99'))}  "
        f"max {_seconds(lag.get('max'))}  tasks {loop.get('tasks')}  "
        f"blocked {loop.get('blocked_total', 0)}{off}"
    )
    rows = [
        [_place(b.get("blocking")), _seconds(b["duration"]), b["cause"],
         time.strftime("%H:%M:%S", time.localtime(b["started"])), b.get("task") or "-"]
        for b in loop.get("blocked", [])
    ]  # fmt: skip
    if not rows:
        return [line]
    table = _table(["BLOCKED AT", "FOR", "CAUSE", "WHEN", "TASK"], rows, "")
    hint = next((b["hint"] for b in loop.get("blocked", []) if b.get("hint")), None)
    fix = textwrap.wrap(f"fix: {hint}", _FIX_WIDTH, subsequent_indent="     ") if hint else []
    return [line, "", *table, *fix]


def _place(frame: dict[str, Any] | None) -> str:
    if frame is None:
        return "(stack not sampled)"
    return f"{frame['file']}:{frame['line']} in {frame['function']}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 60:
        return f"{value / 60:.0f}m"
    if value >= 1:
        return f"{value:.2f}s"
    return f"{value * 1000:.1f}ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
