"""Every snippet in README.md and docs/ loads or runs: what a reader copies, works.

Found on each run, so new snippets are checked without an edit here:

* every fenced ``toml`` block is a ``toolkit.toml`` (unless its first line is a comment
  naming another file, ``# pyproject.toml``), loaded from a temporary directory;
* every ``TOOLKIT_*=`` assignment in a fenced ``bash``/``sh``/``shell``/``env``/``console``
  block (one case per block, its assignments set together) and in an inline code span
  (one case per span) is set in the environment, as a shell would read it.

Each is loaded through :class:`~toolkit.ToolkitSettings`. ``TOOLKIT_CONFIG`` names a file
of the reader's, so it is not set. Every ``TOOLKIT_*`` name the pages mention must name a
setting, too.

Every fenced ``python`` block runs, each in a fresh module namespace, offline (a TCP connect or a
name lookup fails the block; ``OPENAI_API_KEY`` is set, as in a reader's shell), within
:data:`SNIPPET_TIMEOUT` seconds. A block with a top-level
``await`` is compiled with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` and run by ``asyncio.run``; one
that calls ``asyncio.run`` itself is plain code. What a block cannot do standalone is said by an
HTML comment on the nearest non-blank line above its fence (invisible on the rendered page):

* ``<!-- snippet: fragment: <why> -->``: not run (a piece of a larger app, a shell session,
  pseudo-code); the reason is required;
* ``<!-- snippet: continues -->``: run after the page's previous Python block, in its namespace
  (the page builds one example in steps);
* ``<!-- snippet: redis -->``: ``redis://localhost:6379/0`` in it is the suite's real Redis
  (the fixture's URL), the one connection it may open;
* ``<!-- snippet: plugin -->``: it imports a plugin distribution (``plugins/``), so it runs
  with the plugins' tests, ``tests/plugins/test_plugin_snippets.py``, where they are installed.

Words combine after one ``snippet:``, comma-separated: ``<!-- snippet: continues, redis -->``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shlex
import socket
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import redis
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider

from toolkit import ToolkitSettings
from toolkit.settings import CONFIG_FILE_ENV, ENV_PREFIX
from toolkit.settings._root import variable_field

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = frozenset({"bash", "sh", "shell", "zsh", "env", "dotenv", "console"})
ASSIGNMENT = re.compile(rf"^{ENV_PREFIX}[A-Za-z0-9_]+=")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass
class Snippet:
    page: Path
    line: int
    kind: str  # "toml" or "env"
    text: str
    assignments: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # why a shell would not read it

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _fences(text: str) -> list[tuple[int, str, str]]:
    """(line of the opening fence, language, dedented body) of each fenced block."""
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^([ \t]*)(`{3,}|~{3,})\s*([\w+-]*)", lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, language = opening.groups()
        body, start = [], index + 1
        index += 1
        while index < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[index]
        ):
            body.append(lines[index].removeprefix(indent))
            index += 1
        blocks.append((start, language.lower(), "\n".join(body) + "\n"))
        index += 1
    return blocks


def _assignments(command_text: str) -> dict[str, str]:
    """The ``TOOLKIT_*`` assignments of shell text, as the shell would read their values.

    Raises:
        ValueError: a line that sets one is not shell (an unclosed quote).
    """
    found: dict[str, str] = {}
    for line in command_text.replace("\\\n", " ").splitlines():
        if ENV_PREFIX not in line:
            continue
        for token in shlex.split(line, comments=True):
            if ASSIGNMENT.match(token):
                name, _, value = token.partition("=")
                found[name] = value
    return found


def _shell_commands(language: str, body: str) -> str:
    if language != "console":
        return body
    # A console block shows prompts and output: only what follows "$ " is typed, with the
    # lines it continues.
    typed, continued = [], False
    for line in body.splitlines():
        if line.startswith("$ ") or continued:
            typed.append(line.removeprefix("$ "))
            continued = line.endswith("\\")
    return "\n".join(typed)


def _snippet(page: Path, line: int, text: str, commands: str) -> Snippet:
    snippet = Snippet(page, line, "env", text)
    try:
        snippet.assignments = _assignments(commands)
    except ValueError as exc:
        snippet.problem = f"a line that sets {ENV_PREFIX}* is not shell: {exc}"
        snippet.assignments = {ENV_PREFIX: ""}
    return snippet


def _is_other_file(body: str) -> bool:
    first = next((line for line in body.splitlines() if line.strip()), "")
    named = re.match(r"^\s*#\s*(\S+\.toml)\b", first)
    return named is not None and Path(named[1]).name != "toolkit.toml"


def snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for page in PAGES:
        text = page.read_text()
        for line, language, body in _fences(text):
            if language == "toml" and not _is_other_file(body):
                found.append(Snippet(page, line, "toml", body))
            elif language in SHELLS:
                snippet = _snippet(page, line, body, _shell_commands(language, body))
                if snippet.assignments:
                    found.append(snippet)
        prose = _without_fences(text)
        for match in INLINE_CODE.finditer(prose):
            code = match[1].strip().removeprefix("export ")
            if ASSIGNMENT.match(code):
                line = prose.count("\n", 0, match.start()) + 1
                found.append(_snippet(page, line, code, code))
    return found


def _without_fences(text: str) -> str:
    """The page with each fenced block's lines blanked (line numbers kept)."""
    lines = text.splitlines()
    for start, _language, body in _fences(text):
        for offset in range(-1, body.count("\n") + 1):
            if 0 <= start + offset < len(lines):
                lines[start + offset] = ""
    return "\n".join(lines)


SNIPPETS = snippets()


@pytest.fixture(autouse=True)
def _clean_slate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_pages_have_toml_and_environment_snippets_to_check() -> None:
    """The extraction finds something: a broken pattern must not pass by checking nothing."""
    kinds = {snippet.kind for snippet in SNIPPETS}
    assert kinds == {"toml", "env"}, [str(s) for s in SNIPPETS]


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.kind == "toml"], ids=str)
def test_every_toml_snippet_loads_as_toolkit_toml(snippet: Snippet, tmp_path: Path) -> None:
    (tmp_path / "toolkit.toml").write_text(snippet.text)
    ToolkitSettings()


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.kind == "env"], ids=str)
def test_every_environment_snippet_loads(snippet: Snippet, monkeypatch: pytest.MonkeyPatch) -> None:
    assert snippet.problem is None, snippet.problem
    for name, value in snippet.assignments.items():
        if name != CONFIG_FILE_ENV:
            monkeypatch.setenv(name, value)
    ToolkitSettings()


def _mentioned_variables() -> list[tuple[str, str]]:
    """(page, name) of each ``TOOLKIT_*`` name in the pages, patterns such as
    ``TOOLKIT_CACHE__*``, ``TOOLKIT_CACHE__…`` and ``TOOLKIT_RESILIENCE__<NAME>`` left out."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(rf"{ENV_PREFIX}[A-Z0-9_]*", text):
            following = text[match.end() : match.end() + 1]
            if match[0].endswith("_") or following in ("*", "…", "<"):
                continue
            found.append((str(page.relative_to(ROOT)), match[0]))
    return sorted(set(found))


@pytest.mark.parametrize(("page", "name"), _mentioned_variables())
def test_every_variable_the_pages_name_is_a_setting(page: str, name: str) -> None:
    assert name == CONFIG_FILE_ENV or variable_field(name) is not None, (
        f"{page} names {name}, which is no setting"
    )


# --- Python blocks --------------------------------------------------------------------------------

SNIPPET_TIMEOUT = 10
"""Seconds one Python block (with the blocks it continues) may take."""

PYTHON = frozenset({"python", "py"})
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.*?)\s*-->\s*$")
KINDS = frozenset({"fragment", "continues", "redis", "plugin"})
REDIS_IN_DOCS = "redis://localhost:6379/0"


@dataclass
class PythonBlock:
    page: Path
    line: int  # of the opening fence
    body: str
    kinds: frozenset[str]
    reason: str = ""  # why a fragment does not run
    before: list[PythonBlock] = field(default_factory=list)  # the blocks it continues, in order
    problem: str | None = None  # a marker the test cannot read

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _marker(lines: list[str], fence: int) -> tuple[frozenset[str], str, str | None]:
    """(kinds, fragment reason, problem) of the marker above the fence at index ``fence``."""
    above = fence - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    found = MARKER.match(lines[above]) if above >= 0 else None
    if found is None:
        return frozenset(), "", None
    words, _, reason = found[1].partition(":")
    kinds = frozenset(word.strip() for word in words.split(","))
    if not kinds <= KINDS:
        return (
            kinds,
            reason,
            f"unknown snippet marker {sorted(kinds - KINDS)}: one of {sorted(KINDS)}",
        )
    if "fragment" in kinds and not reason.strip():
        return kinds, reason, "a fragment says why: <!-- snippet: fragment: <why> -->"
    return kinds, reason.strip(), None


def python_blocks() -> list[PythonBlock]:
    found: list[PythonBlock] = []
    for page in PAGES:
        text = page.read_text()
        lines = text.splitlines()
        previous: PythonBlock | None = None
        for line, language, body in _fences(text):
            if language not in PYTHON:
                continue
            kinds, reason, problem = _marker(lines, line - 1)
            block = PythonBlock(page, line, body, kinds, reason, problem=problem)
            if "continues" in kinds:
                if previous is None:
                    block.problem = "continues, but no runnable Python block comes before it"
                else:
                    block.before = [*previous.before, previous]
            if "fragment" not in kinds:
                previous = block
            found.append(block)
    return found


PYTHON_BLOCKS = python_blocks()


_CONNECT = socket.socket.connect
_CONNECT_EX = socket.socket.connect_ex
_GETADDRINFO = socket.getaddrinfo


def _go_offline(monkeypatch: pytest.MonkeyPatch, allowed_ports: frozenset[int]) -> None:
    """Refuse TCP connections and name lookups, but to loopback ``allowed_ports``."""

    def refused(sock: socket.socket, address: Any) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6) and (
            address[0] not in ("127.0.0.1", "::1", "localhost") or address[1] not in allowed_ports
        )

    def connect(sock: socket.socket, address: Any) -> None:
        if refused(sock, address):
            raise OSError(f"a docs snippet connected to {address!r}: snippets run offline")
        _CONNECT(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if refused(sock, address):
            raise OSError(f"a docs snippet connected to {address!r}: snippets run offline")
        return _CONNECT_EX(sock, address)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("localhost", "127.0.0.1", "::1") or int(port or 0) not in allowed_ports:
            raise OSError(f"a docs snippet looked up {host!r}:{port!r}: snippets run offline")
        return _GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _run(block: PythonBlock, namespace: dict[str, Any], redis_url: str | None) -> None:
    source = block.body
    if redis_url is not None:
        source = source.replace(REDIS_IN_DOCS, redis_url)
    # Blank lines first, so that a traceback names the page's own line.
    code = compile(
        "\n" * block.line + source, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)


def test_the_pages_have_python_blocks_that_run_and_fragments_that_say_why() -> None:
    """The extraction finds blocks of each kind: a broken pattern must not pass by running
    nothing, and every marker is one the test reads."""
    assert [str(b) for b in PYTHON_BLOCKS if b.problem] == []
    runnable = [b for b in PYTHON_BLOCKS if "fragment" not in b.kinds]
    assert len(runnable) >= 20, [str(b) for b in PYTHON_BLOCKS]
    assert any(b.before for b in runnable)
    assert any(b.page.name == "pipelines.md" for b in runnable)
    assert all("fragment" not in b.kinds for b in PYTHON_BLOCKS if b.page.name == "pipelines.md")


RUNNABLE: Final = [b for b in PYTHON_BLOCKS if "fragment" not in b.kinds]
"""Blocks that run; those marked ``plugin`` import a plugin distribution, so they run with the
plugins' tests (``tests/plugins/test_plugin_snippets.py``), where the plugins are installed."""


@pytest.mark.timeout(SNIPPET_TIMEOUT)
@pytest.mark.parametrize("block", [b for b in RUNNABLE if "plugin" not in b.kinds], ids=str)
def test_every_python_block_runs(
    block: PythonBlock, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = [*block.before, block]
    redis_url: str | None = None
    allowed: frozenset[int] = frozenset()
    if any("redis" in b.kinds for b in chain):
        redis_url = request.getfixturevalue("redis_url")
        allowed = frozenset({int(redis_url.rsplit(":", 1)[1].split("/")[0])})
    _go_offline(monkeypatch, allowed)
    # A reader's shell has a key for the provider SDKs their snippets construct.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-snippet")
    module = types.ModuleType(f"docs_snippet_{block.page.stem}_{block.line}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    global_meters = metrics.get_meter_provider()
    try:
        for part in chain:
            _run(part, module.__dict__, redis_url if "redis" in part.kinds else None)
    finally:
        # A global provider a snippet set is reset after the test (conftest); shut down here,
        # it takes its Prometheus reader's collector out of the process-wide registry.
        meters = metrics.get_meter_provider()
        if meters is not global_meters and isinstance(meters, MeterProvider):
            meters.shutdown()


def test_a_python_block_runs_its_top_level_await_and_fails_when_it_goes_online(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The runner itself: a top-level ``await`` is awaited (its failure surfaces), a block
    continues its predecessor's namespace, and a connection out fails the block."""
    page = ROOT / "docs" / "pipelines.md"
    first = PythonBlock(page, 1, "import asyncio\nseen = []\n", frozenset())
    awaiting = PythonBlock(
        page, 3, "await asyncio.sleep(0)\nseen.append(1)\nassert seen == [2], seen\n", frozenset()
    )
    awaiting.before = [first]
    with pytest.raises(AssertionError, match=r"^\[1\]$"):  # ran on past its await
        test_every_python_block_runs(awaiting, request, monkeypatch)
    for online in (
        "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=1)\n",  # a lookup
        "import socket\nwith socket.socket() as s:\n    s.connect(('127.0.0.1', 6379))\n",
    ):
        block = PythonBlock(page, 1, online, frozenset())
        with pytest.raises(OSError, match="snippets run offline"):
            test_every_python_block_runs(block, request, monkeypatch)


@pytest.mark.redis
def test_a_python_block_marked_redis_reaches_the_suites_redis_and_only_it(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    page = ROOT / "docs" / "caching.md"
    body = f"import redis\nassert redis.Redis.from_url({REDIS_IN_DOCS!r}).ping()\n"
    test_every_python_block_runs(
        PythonBlock(page, 1, body, frozenset({"redis"})), request, monkeypatch
    )
    elsewhere = body.replace("6379", "6390")
    with pytest.raises(redis.ConnectionError, match="snippets run offline"):
        test_every_python_block_runs(
            PythonBlock(page, 1, elsewhere, frozenset({"redis"})), request, monkeypatch
        )
