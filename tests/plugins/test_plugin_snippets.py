"""The docs' Python blocks marked ``plugin`` (they import a plugin distribution) run here, where
the plugins are installed, as every other block runs in ``tests/unit/test_docs_snippets.py``."""

from __future__ import annotations

import pytest

from tests.unit.test_docs_snippets import (
    RUNNABLE,
    SNIPPET_TIMEOUT,
    PythonBlock,
    test_every_python_block_runs,
)

PLUGIN_BLOCKS = [b for b in RUNNABLE if "plugin" in b.kinds]


def test_the_pages_have_plugin_blocks() -> None:
    assert any(b.page.name == "plugins.md" for b in PLUGIN_BLOCKS), [str(b) for b in RUNNABLE]


@pytest.mark.timeout(SNIPPET_TIMEOUT)
@pytest.mark.parametrize("block", PLUGIN_BLOCKS, ids=str)
def test_every_plugin_block_runs(
    block: PythonBlock, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_every_python_block_runs(block, request, monkeypatch)
