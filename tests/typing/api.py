"""Checked by mypy --strict (tests/unit/test_typing.py), never run: decorators keep types."""

from __future__ import annotations

from typing import assert_type

import toolkit


async def old_answer(question: str, *, retries: int = 0) -> str:
    return question


@toolkit.feature("typing.answer-v2", fallback=old_answer)
async def new_answer(question: str, *, retries: int = 0) -> str:
    return question


async def use() -> None:
    assert_type(await new_answer("why?", retries=1), str)
    evaluation = toolkit.flags.evaluate("typing.answer-v2")
    assert_type(evaluation.variant, str)
    assert_type(toolkit.flags.is_enabled("typing.answer-v2", subject="user-1"), bool)
