"""Every relative link in the docs resolves: the file exists, and its ``#anchor`` is a heading
of the page it points at (GitHub's anchors: lower case, punctuation dropped, spaces to ``-``,
a repeated heading numbered ``-1``, ``-2``...)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "dashboards" / "README.md",
    ROOT / "examples" / "README.md",
    ROOT / "plugins" / "README.md",
]
# [text](target) and [text]: target, outside code; an image's ![alt](target) too.
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _prose(text: str) -> str:
    """``text`` without fenced blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


def _links(page: Path) -> list[str]:
    prose = _prose(page.read_text())
    return INLINE_LINK.findall(prose) + REFERENCE.findall(prose)


def _problem(page: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
        return None
    path, _, anchor = target.partition("#")
    linked = (page.parent / unquote(path)).resolve() if path else page
    if not linked.exists():
        return f"{target}: no file {os.path.relpath(linked, ROOT)}"
    if anchor and linked.suffix == ".md" and unquote(anchor) not in _anchors(linked):
        return f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_docs_links_resolve(page: Path) -> None:
    """Every relative link and anchor of the page points at a file and heading that exist."""
    problems = [p for t in _links(page) if (p := _problem(page, t)) is not None]
    assert not problems, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(problems)
