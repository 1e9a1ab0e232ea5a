"""Admin routes: token auth on every path, the flag API, and changes the next request obeys."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import toolkit
from tests.support.asgi import serving
from tests.support.servers import free_port
from toolkit import ToolkitSettings
from toolkit.admin import MAX_BODY_BYTES, admin_routes
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagDefinition, declare
from toolkit.settings import AdminSettings

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("served")]

OPS_TOKEN = secrets.token_urlsafe(24)
CI_TOKEN = secrets.token_urlsafe(24)
TOKENS = {"ops": OPS_TOKEN, "ci": CI_TOKEN}
CHALLENGE = 'Basic realm="agent-server-toolkit"'

declare("test.admin-model", variants={"small": "gpt-small", "large": "gpt-large"}, default="small")


def basic(name: str, token: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{name}:{token}".encode()).decode()
    return {"authorization": f"Basic {credentials}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


OPS = basic("ops", OPS_TOKEN)
CI = bearer(CI_TOKEN)
JSON = {"content-type": "application/json"}


def agent_app(backend_url: str = "memory://", tokens: dict[str, str] | None = None) -> FastAPI:
    """An app whose routes report the flags they see; /limited allows one request a minute."""
    app = FastAPI()

    @app.get("/limited")
    @app.get("/open")
    async def seen() -> dict[str, Any]:
        return {
            "ratelimit": toolkit.flags.is_enabled("ratelimit"),
            "model": toolkit.flags.variant("test.admin-model"),
        }

    settings = ToolkitSettings(
        backend={"url": backend_url, "timeout": 1},
        admin={"tokens": TOKENS if tokens is None else tokens},
        ratelimit={"routes": {"/limited": "1/minute"}},
        telemetry={"prometheus": False},
    )
    toolkit.install(app, settings)
    return app


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """The same admin test on the in-process and the Redis backend."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    return problem


async def test_admin_routes_are_not_mounted_without_a_token() -> None:
    """No token configured: every admin path is the app's plain 404, credentials or not."""
    async with serving(agent_app(tokens={})) as http:
        for path in ("/_toolkit/", "/_toolkit/flags", "/_toolkit/history"):
            assert (await http.get(path)).status_code == 404
            assert (await http.get(path, headers=OPS)).status_code == 404
        response = await http.put("/_toolkit/flags/ratelimit", headers=OPS, json={"variant": "off"})
        assert response.status_code == 404
        assert (await http.get("/open")).json()["ratelimit"] is True


def test_admin_routes_refuse_to_mount_without_a_token_or_over_the_whole_app() -> None:
    store = toolkit.flags.FlagStore()
    with pytest.raises(ConfigurationError, match=r"admin\.tokens"):
        admin_routes(store, AdminSettings())
    with pytest.raises(ConfigurationError, match="_toolkit"):
        admin_routes(store, AdminSettings(tokens=TOKENS, path="/"))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic",
        "Basic !!!not-base64!!!",
        b"Basic \xe9t\xe9",  # not ASCII: a 500, before any token was checked
        "Basic " + base64.b64encode(b"\xff\xfe:token").decode(),  # not UTF-8 inside
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Bearer",
        "Bearer   ",
        # The token is random: its id is fixed, so that every pytest-xdist worker collects
        # the same tests.
        pytest.param(f"Token {OPS_TOKEN}", id="Token OPS_TOKEN"),
    ],
)
async def test_admin_answers_401_with_a_challenge_to_missing_or_malformed_credentials(
    authorization: str | bytes | None,
) -> None:
    """Every admin path, the page and unknown paths included, asks for Basic credentials."""
    headers = {} if authorization is None else {"authorization": authorization}
    async with serving(agent_app()) as http:
        for path in ("/_toolkit/", "/_toolkit/flags", "/_toolkit/history", "/_toolkit/nope"):
            response = await http.get(path, headers=headers)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"] == CHALLENGE
        response = await http.put(
            "/_toolkit/flags/ratelimit", headers={**headers, **JSON}, json={"variant": "off"}
        )
        assert_problem(response, 401)
        assert (await http.get("/open")).json()["ratelimit"] is True


@pytest.mark.parametrize(
    "headers",
    [
        basic("ops", "x" * 32),
        basic("ops", CI_TOKEN),  # a real token under another token's name
        basic("nobody", OPS_TOKEN),
        basic("ops", OPS_TOKEN[:-1]),
        basic("ops", ""),
        bearer("x" * 32),
        bearer(OPS_TOKEN + "x"),
        bearer(base64.b64encode(f"ops:{OPS_TOKEN}".encode()).decode()),
    ],
    ids=[
        "basic-wrong-token",
        "basic-other-names-token",
        "basic-unknown-name",
        "basic-prefix",
        "basic-empty",
        "bearer-wrong",
        "bearer-longer",
        "bearer-basic-payload",
    ],
)
async def test_admin_answers_403_to_wrong_credentials_and_changes_nothing(
    headers: dict[str, str],
) -> None:
    async with serving(agent_app()) as http:
        for path in ("/_toolkit/", "/_toolkit/flags"):
            response = await http.get(path, headers=headers)
            assert_problem(response, 403)
            assert "www-authenticate" not in response.headers
        response = await http.put(
            "/_toolkit/flags/ratelimit", headers={**headers, **JSON}, json={"variant": "off"}
        )
        assert_problem(response, 403)
        assert (await http.get("/open")).json()["ratelimit"] is True


@pytest.mark.parametrize("headers", [OPS, CI, basic("ci", CI_TOKEN)], ids=["basic", "bearer", "ci"])
async def test_admin_serves_the_page_and_the_api_to_the_right_credentials(
    headers: dict[str, str],
) -> None:
    async with serving(agent_app()) as http:
        page = await http.get("/_toolkit/", headers=headers)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "<title>Feature flags" in page.text

        listed = await http.get("/_toolkit/flags", headers=headers)
        assert listed.status_code == 200
        assert listed.headers["cache-control"] == "no-store"
        body = listed.json()
        assert body["stale"] is False
        assert body["loaded_at"] is not None
        ratelimit = next(flag for flag in body["flags"] if flag["key"] == "ratelimit")
        assert ratelimit["variants"] == {"on": "on", "off": "off", "shadow": "shadow"}
        assert ratelimit["override"] is None
        assert ratelimit["effective"] == {"variant": "on", "rollout": None, "reason": "default"}

        one = await http.get("/_toolkit/flags/test.admin-model", headers=headers)
        assert one.status_code == 200
        assert one.json()["effective"]["variant"] == "small"


async def test_admin_put_changes_the_next_request_and_history_names_the_token(
    backend_url: str,
) -> None:
    """The limiter and the app's flag reads obey a change at once; the history records the
    token's name, never the token."""
    async with serving(agent_app(backend_url)) as http:
        assert (await http.get("/limited")).status_code == 200
        assert (await http.get("/limited")).status_code == 429

        response = await http.put(
            "/_toolkit/flags/ratelimit", headers={**OPS, **JSON}, json={"variant": "off"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["override"] == {"variant": "off"}
        assert response.json()["effective"]["reason"] == "static"
        for _ in range(3):
            answer = await http.get("/limited")
            assert answer.status_code == 200
            assert answer.json()["ratelimit"] is False

        response = await http.put(
            "/_toolkit/flags/test.admin-model", headers={**CI, **JSON}, json={"variant": "large"}
        )
        assert response.status_code == 200, response.text
        assert (await http.get("/open")).json()["model"] == "large"

        response = await http.request("DELETE", "/_toolkit/flags/ratelimit", headers={**CI, **JSON})
        assert response.status_code == 200, response.text
        assert response.json()["override"] is None
        assert (await http.get("/limited")).status_code == 429

        history = await http.get("/_toolkit/history", headers=OPS)
        assert history.status_code == 200
        changes = history.json()["history"]
        assert [(c["key"], c["by"], c["new"]) for c in changes] == [
            ("ratelimit", "ci", None),
            ("test.admin-model", "ci", {"variant": "large"}),
            ("ratelimit", "ops", {"variant": "off"}),
        ]
        assert changes[0]["old"] == {"variant": "off"}
        assert OPS_TOKEN not in history.text
        assert CI_TOKEN not in history.text
        limited = await http.get("/_toolkit/history?limit=1", headers=OPS)
        assert len(limited.json()["history"]) == 1


async def test_admin_rollout_serves_the_variant_to_the_given_share(backend_url: str) -> None:
    async with serving(agent_app(backend_url)) as http:
        response = await http.put(
            "/_toolkit/flags/test.admin-model/rollout",
            headers={**OPS, **JSON},
            json={"variant": "large", "percentage": 100},
        )
        assert response.status_code == 200, response.text
        assert response.json()["effective"] == {
            "variant": "small",
            "rollout": {"variant": "large", "percentage": 100.0},
            "reason": "split",
        }
        assert (await http.get("/open")).json()["model"] == "large"

        response = await http.put(
            "/_toolkit/flags/test.admin-model/rollout",
            headers={**OPS, **JSON},
            json={"variant": "large", "percentage": 0},
        )
        assert response.status_code == 200, response.text
        assert (await http.get("/open")).json()["model"] == "small"


async def test_admin_lists_and_changes_flags_only_another_instance_declared(
    backend_url: str,
) -> None:
    """Any instance's admin routes know every flag the fleet declared, not only their own."""
    key = f"test.elsewhere-{secrets.token_hex(4)}"
    elsewhere = FlagDefinition(key, description="declared by another instance")
    app = agent_app(backend_url)
    async with serving(app) as http:
        await app.state.toolkit.backend.flags_declare({key: elsewhere.to_json()})
        listed = (await http.get("/_toolkit/flags", headers=OPS)).json()["flags"]
        assert [f["description"] for f in listed if f["key"] == key] == [elsewhere.description]

        key = f"test.elsewhere-{secrets.token_hex(4)}"  # straight to a write, no listing first
        await app.state.toolkit.backend.flags_declare({key: elsewhere.to_json()})
        response = await http.put(
            f"/_toolkit/flags/{key}", headers={**CI, **JSON}, json={"variant": "on"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["effective"]["variant"] == "on"


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("PUT", "/_toolkit/flags/ratelimit", None),
        ("PUT", "/_toolkit/flags/ratelimit", "text/plain"),
        ("PUT", "/_toolkit/flags/ratelimit", "application/x-www-form-urlencoded"),
        ("PUT", "/_toolkit/flags/ratelimit", "multipart/form-data; boundary=x"),
        ("PUT", "/_toolkit/flags/ratelimit/rollout", "text/plain"),
        ("DELETE", "/_toolkit/flags/ratelimit", None),
    ],
)
async def test_admin_writes_refuse_anything_but_json_with_415(
    method: str, path: str, content: str | None
) -> None:
    """What a cross-site form could send is refused, whatever its body says."""
    headers = {**OPS, **({"content-type": content} if content else {})}
    body = json.dumps({"variant": "off", "percentage": 100})
    async with serving(agent_app()) as http:
        assert_problem(await http.request(method, path, headers=headers, content=body), 415)
        assert (await http.get("/open")).json()["ratelimit"] is True


async def test_admin_delete_takes_no_body_and_no_content_type(backend_url: str) -> None:
    """As documented ("none, or {}"): a bare DELETE resets the flag; a body still needs JSON,
    and a bare DELETE a browser marks as cross-site (a simple POST a method-override
    middleware turned into DELETE) is refused."""
    async with serving(agent_app(backend_url)) as http:
        for headers, content in [({}, b""), (JSON, b""), (JSON, b"{}")]:
            changed = await http.put(
                "/_toolkit/flags/ratelimit", headers={**OPS, **JSON}, json={"variant": "off"}
            )
            assert changed.json()["override"] == {"variant": "off"}
            response = await http.request(
                "DELETE", "/_toolkit/flags/ratelimit", headers={**OPS, **headers}, content=content
            )
            assert response.status_code == 200, response.text
            assert response.json()["override"] is None

        await http.put(
            "/_toolkit/flags/ratelimit", headers={**OPS, **JSON}, json={"variant": "off"}
        )
        refused = [
            await http.request("DELETE", "/_toolkit/flags/ratelimit", headers=OPS, content=b"{}")
        ]
        for site in ("cross-site", "same-site"):
            cross = {**OPS, "sec-fetch-site": site}
            refused.append(await http.request("DELETE", "/_toolkit/flags/ratelimit", headers=cross))
        assert [r.status_code for r in refused] == [415, 403, 403]
        for response in refused:
            assert_problem(response, response.status_code)
        flag = (await http.get("/_toolkit/flags/ratelimit", headers=OPS)).json()
        assert flag["override"] == {"variant": "off"}
        same_origin = {**OPS, "sec-fetch-site": "same-origin"}  # the admin page's own request
        response = await http.request("DELETE", "/_toolkit/flags/ratelimit", headers=same_origin)
        assert response.status_code == 200, response.text


async def test_admin_refuses_a_body_past_its_cap_with_413() -> None:
    """A change is a few bytes: a larger body is refused before it is all read."""
    padding = "x" * MAX_BODY_BYTES
    async with serving(agent_app()) as http:
        response = await http.put(
            "/_toolkit/flags/ratelimit",
            headers={**OPS, **JSON},
            content=json.dumps({"variant": "off", "padding": padding}),
        )
        assert_problem(response, 413)
        assert (await http.get("/open")).json()["ratelimit"] is True


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("ratelimit", {"variant": "maybe"}, "variant"),
        ("ratelimit", {"variant": True}, "variant"),
        ("ratelimit", {}, "variant"),
        ("ratelimit", {"variant": "off", "by": "someone-else"}, "by"),
        ("ratelimit", ["off"], "body"),
        ("ratelimit", "{not json", "body"),
        ("ratelimit/rollout", {"variant": "off", "percentage": 150}, "percentage"),
        ("ratelimit/rollout", {"variant": "off", "percentage": -1}, "percentage"),
        ("ratelimit/rollout", {"variant": "off", "percentage": "20"}, "percentage"),
        ("ratelimit/rollout", {"variant": "off", "percentage": True}, "percentage"),
        ("ratelimit/rollout", '{"variant": "off", "percentage": NaN}', "percentage"),
        ("ratelimit/rollout", {"variant": "off"}, "percentage"),
        ("ratelimit/rollout", {"variant": "maybe", "percentage": 20}, "variant"),
        # An integer too long for a float: a 500 (OverflowError) before it was compared.
        ("ratelimit/rollout", '{"variant": "off", "percentage": 1' + "0" * 400 + "}", "percentage"),
        ("ratelimit/rollout", {"variant": "off", "percentage": -(10**400)}, "percentage"),
        # Nesting past the recursion limit: a 500 (RecursionError) from the JSON parser.
        ("ratelimit", "[" * 20_000 + "]" * 20_000, "body"),
        ("ratelimit", '{"variant": ' * 3000 + '"off"' + "}" * 3000, "body"),
        ("ratelimit/rollout", '{"variant": "off", "percentage": ' + "9" * 5000 + "}", "body"),
    ],
)
async def test_admin_answers_422_naming_the_field_and_changes_nothing(
    path: str, body: Any, field: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    async with serving(agent_app()) as http:
        response = await http.put(
            f"/_toolkit/flags/{path}", headers={**OPS, **JSON}, content=content
        )
        problem = assert_problem(response, 422)
        assert problem["field"] == field
        assert problem["detail"].startswith(f"{field}:")
        flag = (await http.get("/_toolkit/flags/ratelimit", headers=OPS)).json()
        assert flag["override"] is None
        assert (await http.get("/_toolkit/history", headers=OPS)).json()["history"] == []


@pytest.mark.parametrize(
    "limit",
    # "²" is a digit to str.isdigit() and a 500 from int(); 5000 digits are past what int()
    # converts.
    ["0", "-1", "abc", "1001", "2.5", "", "²", "%D9%A3", "\uff11", "9" * 5000],
)
async def test_admin_history_refuses_a_bad_limit(limit: str) -> None:
    async with serving(agent_app()) as http:
        response = await http.get(f"/_toolkit/history?limit={limit}", headers=OPS)
        assert assert_problem(response, 422)["field"] == "limit"


async def test_admin_answers_404_for_an_unknown_flag_or_route() -> None:
    async with serving(agent_app()) as http:
        headers = {**OPS, **JSON}
        assert_problem(await http.get("/_toolkit/flags/no.such-flag", headers=OPS), 404)
        answers = [
            await http.put("/_toolkit/flags/no.such-flag", headers=headers, json={"variant": "on"}),
            await http.put(
                "/_toolkit/flags/no.such-flag/rollout",
                headers=headers,
                json={"variant": "on", "percentage": 5},
            ),
            await http.request("DELETE", "/_toolkit/flags/no.such-flag", headers=headers),
            await http.get("/_toolkit/nope", headers=OPS),
        ]
        for response in answers:
            assert_problem(response, 404)
        assert_problem(await http.post("/_toolkit/flags", headers=headers, json={}), 405)
        assert (await http.get("/_toolkit/history", headers=OPS)).json()["history"] == []


async def test_admin_answers_503_when_the_backend_is_down_and_nothing_changes() -> None:
    """A write the backend cannot store is refused, not served from this process alone."""
    async with serving(agent_app(f"redis://127.0.0.1:{free_port()}/0")) as http:
        listed = (await http.get("/_toolkit/flags", headers=OPS)).json()
        assert listed["stale"] is True

        for response in [
            await http.put(
                "/_toolkit/flags/ratelimit", headers={**OPS, **JSON}, json={"variant": "off"}
            ),
            await http.put(
                "/_toolkit/flags/ratelimit/rollout",
                headers={**OPS, **JSON},
                json={"variant": "off", "percentage": 50},
            ),
            await http.request("DELETE", "/_toolkit/flags/ratelimit", headers={**OPS, **JSON}),
            await http.get("/_toolkit/history", headers=OPS),
        ]:
            assert_problem(response, 503)

        flag = (await http.get("/_toolkit/flags/ratelimit", headers=OPS)).json()
        assert flag["override"] is None
        assert flag["effective"]["variant"] == "on"


async def test_admin_purges_the_cache_of_its_own_app() -> None:
    """Two apps installed in one process: each one's admin purges its own cache, not the one
    installed last (the current cache)."""
    first, _installed_last = agent_app(), agent_app()
    cache = first.state.toolkit.cache
    async with serving(first) as http:
        await cache.set("entry", b"v", ttl=60, tags=["catalog"])
        done = await http.post(
            "/_toolkit/cache/invalidate", headers={**OPS, **JSON}, json={"tags": ["catalog"]}
        )
        assert done.json() == {"tags": ["catalog"], "deleted": 1}
        assert await cache.get("entry") is None


def test_the_old_admin_module_warns_and_names_the_new_one() -> None:
    """``toolkit.flags.admin`` was the admin's place: its names still work, with a warning."""
    import toolkit.flags.admin as old

    with pytest.warns(DeprecationWarning, match=r"use toolkit\.admin\.admin_routes"):
        assert old.admin_routes is admin_routes
    with pytest.warns(DeprecationWarning, match=r"toolkit\.flags\.admin\.MAX_BODY_BYTES is dep"):
        from toolkit.flags.admin import MAX_BODY_BYTES as old_cap
    assert old_cap == MAX_BODY_BYTES
