"""The admin page: one HTML file shipped in the package (``page.html``), its inline script
and style allowed by hash and nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

PAGE = "page.html"
"""The page's file, package data of ``toolkit.admin``."""


def page_route() -> Route:
    """``GET /``: the page, read once."""
    page = resources.files("toolkit.admin").joinpath(PAGE).read_text(encoding="utf-8")
    headers = {"content-security-policy": _content_security_policy(page)}

    async def show_page(request: Request) -> Response:
        return HTMLResponse(page, headers=headers)

    return Route("/", show_page, methods=["GET"])


def _content_security_policy(page: str) -> str:
    """Only the page's own inline script and style run, it talks only to this server, and no
    other site may frame it (an admin page's buttons are a clickjacking target)."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks)
        return " ".join(f"'sha256-{d}'" for d in digests)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
