"""Problem details (RFC 9457): the body of the error answers the toolkit's own routes write."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.responses import Response


def problem_response(
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    """An ``application/problem+json`` answer: ``status``, its title, ``detail`` (what was
    wrong and what would work) and any ``extensions`` (``field="limit"``)."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return Response(
        json.dumps(body), status, headers=headers, media_type="application/problem+json"
    )
