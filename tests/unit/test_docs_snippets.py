"""Every settings snippet in README.md and docs/ loads: what a reader copies, works.

Found on each run, so new snippets are checked without an edit here:

* every fenced ``toml`` block is a ``toolkit.toml`` (unless its first line is a comment
  naming another file, ``# pyproject.toml``), loaded from a temporary directory;
* every ``TOOLKIT_*=`` assignment in a fenced ``bash``/``sh``/``shell``/``env``/``console``
  block (one case per block, its assignments set together) and in an inline code span
  (one case per span) is set in the environment, as a shell would read it.

Each is loaded through :class:`~toolkit.ToolkitSettings`. ``TOOLKIT_CONFIG`` names a file
of the reader's, so it is not set. Every ``TOOLKIT_*`` name the pages mention must name a
setting, too.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
