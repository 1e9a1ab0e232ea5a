"""``make demo layered-memory``: both phases on real uvicorn processes, the flags flipped while
the load runs, and ``--serve``."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from examples._harness import ROOT
from examples.layered_memory.app import LAYERS
from examples.layered_memory.demo import FLIPS, USERS, Demo, Phase, report, run

pytestmark = pytest.mark.slow

DURATION = 3.0


@pytest.fixture(scope="module")
def demo() -> Demo:
    return run(DURATION)


def test_every_recall_is_answered_in_both_phases(demo: Demo) -> None:
    for phase in (demo.before, demo.after):
        assert phase.answers
        assert phase.traffic().errors == 0
    assert [flip.status for flip in demo.after.flips] == [200] * len(FLIPS)


def test_each_users_service_is_built_once_with_the_pool_and_per_request_without(
    demo: Demo,
) -> None:
    assert demo.after.metrics is not None
    assert demo.after.metrics.total("toolkit_pool_create_time_seconds_count") == USERS
    (line,) = [line for line in report(demo).splitlines() if line.startswith("services built")]
    assert line.split()[2:4] == [f"{len(demo.before.answers):,}", f"{USERS:,}"]


def test_the_critical_path_is_shorter_with_the_pool_before_any_flag_flips(demo: Demo) -> None:
    """The same path (the buffer and every layer), without building a service per request."""
    (_, all_on), *_ = demo.after.segments()
    assert all_on
    assert Phase(all_on).traffic().p50 < demo.before.traffic().p50
    mean = sum(a.latency for a in all_on) / len(all_on)
    assert mean < sum(a.latency for a in demo.before.answers) / len(demo.before.answers)


def test_without_the_toolkit_every_recall_takes_the_whole_path(demo: Demo) -> None:
    for answer in demo.before.answers:
        assert (answer.buffered, answer.layers) == (True, LAYERS)
    assert demo.before.calls == {path: len(demo.before.answers) for path in ("buffer", *LAYERS)}


def test_each_flip_takes_effect_from_the_next_request(demo: Demo) -> None:
    """Every recall sent after a flip was answered takes the new path, every recall answered
    before it was sent the old one; each path is shorter than the last."""
    segments = [answers for _, answers in demo.after.segments()]
    expected = [
        (True, LAYERS),
        (True, tuple(layer for layer in LAYERS if layer != "semantic")),
        (False, tuple(layer for layer in LAYERS if layer != "semantic")),
    ]
    assert [key for key, _ in FLIPS] == ["memory.layer.semantic", "memory.buffer"]
    for answers, path in zip(segments, expected, strict=True):
        assert answers
        assert {(a.buffered, a.layers) for a in answers} == {path}
    medians = [Phase(answers).traffic().p50 for answers in segments]
    assert medians == sorted(medians, reverse=True)
    assert len(set(medians)) == len(medians)


def test_a_span_and_a_model_call_per_path_taken(demo: Demo) -> None:
    """The after server's step spans and its model's calls agree with what the clients were
    told, per path: the flipped paths stopped getting either."""
    after = demo.after
    assert after.metrics is not None
    steps = after.metrics.by("toolkit_agent_step_duration_seconds_count", "toolkit_step_name")
    taken = {"buffer": sum(bool(a.buffered) for a in after.answers)}
    taken |= {layer: sum(layer in a.layers for a in after.answers) for layer in LAYERS}
    assert {path: steps[f"memory.{path}"] for path in taken} == taken
    assert after.calls == taken
    assert taken["semantic"] < taken["working"]
    assert taken["buffer"] < taken["working"]
    for path in taken:
        assert f"spans {taken[path]:>5}" in report(demo)


def test_the_report_shows_the_flag_changes_the_server_applied(demo: Demo) -> None:
    assert demo.after.metrics is not None
    changes = demo.after.metrics.by("toolkit_feature_flag_changes_total", "feature_flag_key")
    assert changes == {key: 1 for key, _ in FLIPS}
    assert "memory.layer.semantic 1, memory.buffer 1" in report(demo)
    assert demo.after.status_page == 200


def test_serve_runs_the_app_with_the_toolkit_and_an_operator_token() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples", "layered-memory", "--serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        flags_page = demo.stdout.readline()
        assert flags_page.startswith("flags page: http://127.0.0.1:")
        url = flags_page.split()[2].removesuffix("/_toolkit/")
        token = flags_page.split()[-1].rstrip(")")
        lines = [demo.stdout.readline() for _ in range(3)]
        assert lines[-1].startswith("examples.layered_memory.app:app with the toolkit on")

        def recall() -> httpx.Response:
            return httpx.post(f"{url}/recall", json={"user_id": "u1", "message": "hello there"})

        assert recall().json()["layers"] == list(LAYERS)
        flip = httpx.put(
            f"{url}/_toolkit/flags/memory.layer.episodic",
            json={"variant": "off"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert flip.status_code == 200
        assert recall().json()["layers"] == ["working", "semantic"]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(15)
        if demo.stdout is not None:
            demo.stdout.close()
