"""The admin pages: HTML files shipped in the package (``page.html``, the flags;
``status.html``, the status), each with the one stylesheet (``style.css``) inlined, their
inline script and style allowed by hash and nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

PAGE = "page.html"
"""The flags page's file, package data of ``toolkit.admin``."""
STATUS_PAGE = "status.html"
"""The status page's file."""
STYLE = "style.css"
"""The pages' stylesheet, put in each where it says ``<!-- toolkit:style -->``."""
_STYLE_SLOT = "<!-- toolkit:style -->"


def page_route(path: str = "/", page: str = PAGE) -> Route:
    """``GET path``: the page ``page``, read once."""
    html = _read(page).replace(_STYLE_SLOT, f"<style>\n{_read(STYLE)}</style>")
    headers = {"content-security-policy": _content_security_policy(html)}

    async def show_page(request: Request) -> Response:
        return HTMLResponse(html, headers=headers)

    return Route(path, show_page, methods=["GET"])


def _read(name: str) -> str:
    return resources.files("toolkit.admin").joinpath(name).read_text(encoding="utf-8")


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
