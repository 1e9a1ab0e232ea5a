"""Admin routes for feature flags: a JSON API and a page, behind named tokens.

``install()`` mounts them at ``admin.path`` (``/_toolkit``) only when ``admin.tokens`` names at
least one token; without one, every admin path is the app's plain 404. Every route, the page
included, takes HTTP Basic (``name:token``, which browsers prompt for and resend with the
page's own requests) or ``Authorization: Bearer <token>``. Changes are recorded with the
token's name.

    GET    /                    the page
    GET    /flags               every flag, its override and what it serves now
    GET    /flags/{key}         one flag
    PUT    /flags/{key}         {"variant": "off"}: serve it to everyone
    PUT    /flags/{key}/rollout {"variant": "on", "percentage": 20}: sticky percentage rollout
    DELETE /flags/{key}         back to the default (no body, or {})
    GET    /history?limit=50    the newest changes first
    POST   /cache/invalidate    {"tags": ["catalog"]}: delete every cached entry under them
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import reprlib
from collections.abc import Awaitable, Mapping
from importlib import resources
from typing import Any

from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from toolkit._problem import problem_response
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags._model import DEFAULT, SPLIT, STATIC, FlagDefinition
from toolkit.flags._store import FLAG_HISTORY_LENGTH, FlagStore, FlagView, UnknownFlag
from toolkit.settings import AdminSettings

REALM = "agent-server-toolkit"
DEFAULT_HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = FLAG_HISTORY_LENGTH
"""As many changes as the backends keep."""
MAX_BODY_BYTES = 64 * 1024
"""A change is a few dozen bytes of JSON; anything past this is refused unread (413)."""

logger = logging.getLogger("toolkit.admin")

_PAGE = "admin_page.html"
_ALWAYS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
# ASCII digits: str.isdigit() also takes "²", which int() refuses.
_LIMIT = re.compile(r"[0-9]{1,4}")
# Values quoted back in a 422, shortened: a client's 400-digit number or 60 KiB string is not
# worth repeating in full.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 60
_QUOTE.maxlong = 40


def admin_routes(store: FlagStore, settings: AdminSettings) -> Mount:
    """The admin API and page over ``store``, to mount on the app's router.

    Raises:
        ConfigurationError: no token is configured, or ``path`` is ``/`` (the admin routes
            would answer, and demand a token, for every path of the app).
    """
    if not settings.tokens:
        raise ConfigurationError(
            "admin routes need a token in admin.tokens, such as "
            'TOOLKIT_ADMIN__TOKENS=\'{"ops": "<32 random characters>"}\''
        )
    if settings.path.rstrip("/") == "":
        raise ConfigurationError(
            f"TOOLKIT_ADMIN__PATH={settings.path!r} would cover the whole app; use a prefix "
            "such as '/_toolkit'"
        )
    return Mount(settings.path, app=_Admin(store, settings.tokens), name="toolkit-admin")


class _Problem(Exception):
    """An RFC 9457 problem answer, raised by a handler before it responds."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self) -> Response:
        return problem_response(self.status, self.detail, headers=self.headers, **self.extensions)


def _invalid(field: str, message: str) -> _Problem:
    return _Problem(422, f"{field}: {message}", field=field)


def _not_json() -> _Problem:
    return _Problem(415, "changes take a JSON body: send 'content-type: application/json'")


def _unauthorized(detail: str) -> _Problem:
    return _Problem(401, detail, headers={"www-authenticate": f'Basic realm="{REALM}"'})


def _digest(value: str) -> bytes:
    # compare_digest is constant time only for inputs of one length: compare fixed-size
    # hashes, so that neither a token's length nor a guess's shows in the timing.
    return hashlib.sha256(value.encode()).digest()


class _Tokens:
    """The configured tokens, and who a request's credentials name."""

    def __init__(self, tokens: Mapping[str, SecretStr]) -> None:
        self._known = [
            (name, _digest(name), _digest(token.get_secret_value()))
            for name, token in tokens.items()
        ]

    def identify(self, authorization: str | None) -> str:
        """The name of the token that ``authorization`` carries.

        Raises:
            _Problem: 401 when the credentials are missing or malformed, 403 when wrong.
        """
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        given_name: bytes | None = None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 inside
                raise _unauthorized("Basic credentials are not base64 of 'name:token'") from None
            name, colon, token = decoded.partition(":")
            if not colon:
                raise _unauthorized("Basic credentials are not base64 of 'name:token'")
            given_name = _digest(name)
        elif scheme == "bearer" and credentials:
            token = credentials
        else:
            raise _unauthorized("send 'Authorization: Basic' (name:token) or 'Bearer <token>'")
        given_token = _digest(token)
        found: str | None = None
        # Every token is compared, with no early exit, so the time taken does not tell
        # whether a name exists or which entry matched.
        for name, name_digest, token_digest in self._known:
            token_ok = hmac.compare_digest(token_digest, given_token)
            name_ok = given_name is None or hmac.compare_digest(name_digest, given_name)
            if token_ok & name_ok and found is None:
                found = name
        if found is None:
            raise _Problem(403, "these credentials do not match any admin token")
        return found


class _Admin:
    """The ASGI app under the mount: authenticates, then routes; every answer is no-store."""

    def __init__(self, store: FlagStore, tokens: Mapping[str, SecretStr]) -> None:
        self._store = store
        self._tokens = _Tokens(tokens)
        self._page = resources.files("toolkit.flags").joinpath(_PAGE).read_text(encoding="utf-8")
        self._page_policy = _content_security_policy(self._page)
        self._router = Router(
            routes=[
                Route("/", self.page, methods=["GET"]),
                Route("/flags", self.list_flags, methods=["GET"]),
                Route("/flags/{key}", self.get_flag, methods=["GET"]),
                Route("/flags/{key}", self.set_flag, methods=["PUT"]),
                Route("/flags/{key}", self.reset_flag, methods=["DELETE"]),
                Route("/flags/{key}/rollout", self.rollout_flag, methods=["PUT"]),
                Route("/history", self.history, methods=["GET"]),
                Route("/cache/invalidate", self.invalidate_cache, methods=["POST"]),
            ],
            default=self.not_found,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await WebSocketClose()(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(_ALWAYS)
            await send(message)

        request = Request(scope)
        try:
            request.state.admin_name = self._tokens.identify(request.headers.get("authorization"))
            await self._router(scope, receive, send_no_store)
        except ClientDisconnect:  # the client left while sending its body: no one to answer
            return
        except _Problem as problem:
            await problem.response()(scope, receive, send_no_store)
        except HTTPException as exc:  # the router's 405, raised before any response
            await _Problem(exc.status_code, exc.detail, headers=exc.headers).response()(
                scope, receive, send_no_store
            )

    # --- routes ------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers={"content-security-policy": self._page_policy})

    async def list_flags(self, request: Request) -> Response:
        store = self._store
        await self._learn_declarations()
        flags = [_flag_json(view) for view in store.flags()]
        return _json({"flags": flags, "stale": store.stale, "loaded_at": store.loaded_at})

    async def get_flag(self, request: Request) -> Response:
        await self._definition(request)
        return _json(self._flag(request))

    async def set_flag(self, request: Request) -> Response:
        definition = await self._definition(request)
        body = await _json_body(request, {"variant"})
        variant = _variant(definition, body, "variant")
        await _write(self._store.set(definition.key, variant, by=request.state.admin_name))
        return _json(self._flag(request))

    async def rollout_flag(self, request: Request) -> Response:
        definition = await self._definition(request)
        body = await _json_body(request, {"variant", "percentage"})
        variant = _variant(definition, body, "variant")
        percentage = body["percentage"]
        # The range test alone also refuses NaN and the infinities, and compares a JSON integer
        # of any length exactly (float() of a 400-digit one would overflow).
        if (
            isinstance(percentage, bool)
            or not isinstance(percentage, int | float)
            or not 0 <= percentage <= 100
        ):
            raise _invalid(
                "percentage", f"must be a number from 0 to 100, got {_QUOTE.repr(percentage)}"
            )
        by = request.state.admin_name
        await _write(self._store.rollout(definition.key, variant, float(percentage), by=by))
        return _json(self._flag(request))

    async def reset_flag(self, request: Request) -> Response:
        definition = await self._definition(request)
        await _json_body(request, set())
        await _write(self._store.reset(definition.key, by=request.state.admin_name))
        return _json(self._flag(request))

    async def history(self, request: Request) -> Response:
        raw = request.query_params.get("limit", str(DEFAULT_HISTORY_LIMIT))
        if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_HISTORY_LIMIT:
            raise _invalid("limit", f"must be a whole number from 1 to {MAX_HISTORY_LIMIT}")
        try:
            changes = await self._store.history(int(raw))
        except BackendError as exc:
            raise _Problem(503, f"the change history cannot be read: {exc}") from exc
        return _json({"history": changes})

    async def invalidate_cache(self, request: Request) -> Response:
        """Purge the caches (responses, functions, embeddings) by tag, on every instance:
        the only way in that a client's own headers never open."""
        from toolkit.cache import current_cache  # the cache imports flags; not the reverse

        tags = (await _json_body(request, {"tags"}))["tags"]
        if (
            not isinstance(tags, list)
            or not tags
            or not all(isinstance(tag, str) and tag for tag in tags)
        ):
            raise _invalid("tags", "must be a non-empty list of non-empty strings")
        try:
            deleted = await current_cache().invalidate(tags)
        except BackendError as exc:
            raise _Problem(
                503,
                f"the cache backend failed ({exc}); some entries may remain. Try again.",
                error_type=exc.error_type,
            ) from exc
        logger.info("cache tags %s invalidated by %s", tags, request.state.admin_name)
        return _json({"tags": tags, "deleted": deleted})

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise _Problem(404, f"no admin route {scope['path']!r}")

    # --- helpers -------------------------------------------------------------------------------

    async def _learn_declarations(self) -> None:
        """Declare here the flags other instances recorded in the backend, so that any
        instance's admin routes list and change every flag of the fleet."""
        with contextlib.suppress(BackendError):  # the flags this process knows still serve
            await self._store.load_declarations()

    async def _definition(self, request: Request) -> FlagDefinition:
        key = request.path_params["key"]
        with contextlib.suppress(UnknownFlag):
            return self._store.definition(key)
        await self._learn_declarations()  # perhaps another instance declared it
        try:
            return self._store.definition(key)
        except UnknownFlag as exc:
            raise _Problem(404, str(exc)) from exc

    def _flag(self, request: Request) -> dict[str, Any]:
        key = request.path_params["key"]
        view = next(view for view in self._store.flags() if view.definition.key == key)
        return _flag_json(view)


def _flag_json(view: FlagView) -> dict[str, Any]:
    """``as_dict()``, plus what the flag serves now: the variant for everyone (or for the
    callers outside a rollout), the rollout, and the OpenTelemetry reason."""
    state = view.state
    effective: dict[str, Any]
    if state is None:
        effective = {"variant": view.default, "rollout": None, "reason": DEFAULT}
    else:
        rollout = state.rollout
        effective = {
            "variant": state.variant,
            "rollout": {"variant": rollout.variant, "percentage": rollout.percentage}
            if rollout
            else None,
            "reason": STATIC if rollout is None else SPLIT,
        }
    return {**view.as_dict(), "effective": effective}


async def _json_body(request: Request, fields: set[str]) -> dict[str, Any]:
    """The write's JSON object with exactly ``fields``; with no fields (DELETE), no body at
    all is accepted too.

    Only JSON is accepted: an HTML form can send urlencoded, multipart or text/plain bodies
    cross-site without a CORS preflight, but never application/json. A write without a body
    and without a content type is what a cross-site ``fetch`` sends as a simple POST, which a
    method-override middleware could turn into a DELETE: it is refused when the browser says
    the request comes from another site (``Sec-Fetch-Site``).
    """
    content_type = request.headers.get("content-type")
    if content_type is None and not fields:
        if request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            raise _Problem(403, "changes are not accepted from pages of other sites")
        if (await _read_body(request)).strip():
            raise _not_json()
        return {}
    if (content_type or "").partition(";")[0].strip().lower() != "application/json":
        raise _not_json()
    raw = await _read_body(request)
    if not raw.strip() and not fields:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8, or an integer past Python's 4300 digits
        raise _invalid("body", "is not valid JSON") from None
    except RecursionError:
        raise _invalid("body", "is nested too deeply; a change is one flat JSON object") from None
    if not isinstance(body, dict):
        raise _invalid("body", f"must be a JSON object with {sorted(fields)}")
    missing, unknown = sorted(fields - body.keys()), sorted(body.keys() - fields)
    if missing:
        raise _invalid(missing[0], "is required")
    if unknown:
        raise _invalid(unknown[0], f"is not accepted here; send only {sorted(fields)}")
    return body


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 past ``MAX_BODY_BYTES`` before it is all read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Problem(413, f"a change is a JSON object of at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _variant(definition: FlagDefinition, body: Mapping[str, Any], field: str) -> str:
    variant = body[field]
    if not isinstance(variant, str) or variant not in definition.variants:
        raise _invalid(
            field,
            f"flag {definition.key!r} has no variant {_QUOTE.repr(variant)}; "
            f"its variants are {sorted(definition.variants)}",
        )
    return variant


async def _write(change: Awaitable[None]) -> None:
    try:
        await change
    except ConfigurationError as exc:
        raise _Problem(422, str(exc)) from exc
    except BackendError as exc:
        # A timeout may strike after Redis ran the write; any other failure means it did not.
        outcome = "may have been saved" if exc.error_type == "timeout" else "was not saved"
        raise _Problem(
            503,
            f"the flag backend failed ({exc}); the change {outcome}. Reload and check "
            "the history before trying again.",
            error_type=exc.error_type,
        ) from exc


def _json(data: Mapping[str, Any]) -> Response:
    # Variant values are whatever the application declared: show the odd ones as text.
    return Response(json.dumps(data, default=str), media_type="application/json")


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
