"""The status routes: the status page and its JSON (``/stats``), read from the app's status
board; a read-only token may read both."""

from __future__ import annotations

import re
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from toolkit.admin._http import invalid, json_response
from toolkit.admin._page import STATUS_PAGE, page_route
from toolkit.telemetry.status import DEFAULT_TRACES, StatusBoard

MAX_STATS_TRACES: Final = 100
"""``GET /stats?traces=``: traces of each kind (slowest, failed) an answer carries at most."""

# ASCII digits only: str.isdigit() also takes "²", which int() refuses.
_COUNT = re.compile(r"[0-9]{1,4}")


def status_routes(status: StatusBoard) -> list[Route]:
    """``GET /status`` (the page) and ``GET /stats`` (its JSON) over ``status``."""

    async def stats(request: Request) -> Response:
        raw = request.query_params.get("traces", str(DEFAULT_TRACES))
        if not _COUNT.fullmatch(raw) or int(raw) > MAX_STATS_TRACES:
            raise invalid("traces", f"must be a whole number from 0 to {MAX_STATS_TRACES}")
        return json_response(status.snapshot(traces=int(raw)))

    return [page_route("/status", STATUS_PAGE), Route("/stats", stats, methods=["GET"])]
