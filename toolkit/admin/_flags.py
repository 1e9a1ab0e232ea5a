"""The flag routes: every flag, one flag, its override or rollout, back to the default, and
the history of changes. Each change is recorded with the admin token's name."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from toolkit.admin._http import QUOTE, Problem, invalid, json_body, json_response
from toolkit.errors import BackendError, ConfigurationError, UnknownFlag
from toolkit.flags._model import DEFAULT, SPLIT, STATIC, FlagDefinition
from toolkit.flags._store import FLAG_HISTORY_LENGTH, FlagStore, FlagView

DEFAULT_HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = FLAG_HISTORY_LENGTH
"""As many changes as the backends keep."""

# ASCII digits: str.isdigit() also takes "²", which int() refuses.
_LIMIT = re.compile(r"[0-9]{1,4}")


def flag_routes(store: FlagStore) -> list[Route]:
    """The routes over ``store``, relative to the admin mount."""
    flags = _FlagRoutes(store)
    return [
        Route("/flags", flags.list_flags, methods=["GET"]),
        Route("/flags/{key}", flags.get_flag, methods=["GET"]),
        Route("/flags/{key}", flags.set_flag, methods=["PUT"]),
        Route("/flags/{key}", flags.reset_flag, methods=["DELETE"]),
        Route("/flags/{key}/rollout", flags.rollout_flag, methods=["PUT"]),
        Route("/history", flags.history, methods=["GET"]),
    ]


class _FlagRoutes:
    def __init__(self, store: FlagStore) -> None:
        self._store = store

    async def list_flags(self, request: Request) -> Response:
        store = self._store
        await self._learn_declarations()
        flags = [_flag_json(view) for view in store.flags()]
        return json_response({"flags": flags, "stale": store.stale, "loaded_at": store.loaded_at})

    async def get_flag(self, request: Request) -> Response:
        await self._definition(request)
        return json_response(self._flag(request))

    async def set_flag(self, request: Request) -> Response:
        definition = await self._definition(request)
        body = await json_body(request, {"variant"})
        variant = _variant(definition, body, "variant")
        await _write(self._store.set(definition.key, variant, by=request.state.admin_name))
        return json_response(self._flag(request))

    async def rollout_flag(self, request: Request) -> Response:
        definition = await self._definition(request)
        body = await json_body(request, {"variant", "percentage"})
        variant = _variant(definition, body, "variant")
        percentage = body["percentage"]
        # The range test alone also refuses NaN and the infinities, and compares a JSON integer
        # of any length exactly (float() of a 400-digit one would overflow).
        if (
            isinstance(percentage, bool)
            or not isinstance(percentage, int | float)
            or not 0 <= percentage <= 100
        ):
            raise invalid(
                "percentage", f"must be a number from 0 to 100, got {QUOTE.repr(percentage)}"
            )
        by = request.state.admin_name
        await _write(self._store.rollout(definition.key, variant, float(percentage), by=by))
        return json_response(self._flag(request))

    async def reset_flag(self, request: Request) -> Response:
        definition = await self._definition(request)
        await json_body(request, set())
        await _write(self._store.reset(definition.key, by=request.state.admin_name))
        return json_response(self._flag(request))

    async def history(self, request: Request) -> Response:
        raw = request.query_params.get("limit", str(DEFAULT_HISTORY_LIMIT))
        if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_HISTORY_LIMIT:
            raise invalid("limit", f"must be a whole number from 1 to {MAX_HISTORY_LIMIT}")
        try:
            changes = await self._store.history(int(raw))
        except BackendError as exc:
            raise Problem(503, f"the change history cannot be read: {exc}") from exc
        return json_response({"history": changes})

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
            raise Problem(404, str(exc)) from exc

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


def _variant(definition: FlagDefinition, body: Mapping[str, Any], field: str) -> str:
    variant = body[field]
    if not isinstance(variant, str) or variant not in definition.variants:
        raise invalid(
            field,
            f"flag {definition.key!r} has no variant {QUOTE.repr(variant)}; "
            f"its variants are {sorted(definition.variants)}",
        )
    return variant


async def _write(change: Awaitable[None]) -> None:
    try:
        await change
    except ConfigurationError as exc:
        raise Problem(422, str(exc)) from exc
    except BackendError as exc:
        # A timeout may strike after Redis ran the write; any other failure means it did not.
        outcome = "may have been saved" if exc.error_type == "timeout" else "was not saved"
        raise Problem(
            503,
            f"the flag backend failed ({exc}); the change {outcome}. Reload and check "
            "the history before trying again.",
            error_type=exc.error_type,
        ) from exc
