"""What every example's demo shares: its server, its load, its table, its command line.

An example is a package ``examples/<name>/`` (``make demo NAME=<name-with-dashes>``, or
``python -m examples <name>``) with:

- ``app.py``: the app, its "before" (no toolkit) and "after" (the toolkit as its docs
  recommend) chosen at import by ``after_mode()`` (``EXAMPLE_MODE``). The app side::

      from examples._harness import ScriptedModel, after_mode, mount_call_counts, status_settings

      model = ScriptedModel("notes-model", latency=(0.05, 0.1), error_rate=0.1)
      mount_call_counts(app, {"model": model})      # GET /_demo/calls -> {"model": 12}
      if after_mode():
          toolkit.install(app, toolkit.ToolkitSettings(**status_settings()))

- ``demo.py``: both phases on real uvicorn processes, a short load, a before/after table::

      from examples._harness import Row, Server, Traffic, closed_loop, comparison, demo_main
      from examples._harness import drive, send

      def run(duration: float) -> dict[str, Traffic]:
          seen = {}
          for mode in ("before", "after"):
              traffic = seen[mode] = Traffic()
              with Server("examples.notes.app:app", mode=mode) as server:
                  drive(server.url, duration, closed_loop(8, lambda http, n: send(
                      http, "POST", "/notes", traffic, json={"text": "hi"})))
                  server.get_json("/_demo/calls"); server.metrics().total("...")
          return seen

      def report(seen: dict[str, Traffic]) -> str:
          return "\\n".join(comparison([
              Row("p95", seen["before"].p95 * 1000, seen["after"].p95 * 1000, "ms")]))

      def main(argv=None) -> int:
          return demo_main(argv, prog="python -m examples.notes.demo", description=__doc__,
                           run=run, report=report,
                           serve=lambda port: Server("examples.notes.app:app", mode="after",
                                                     port=port))

- a README and a test (``tests/examples/test_examples_<name>.py``) that runs the demo briefly and
  checks that the table's claims hold.

Pieces: ``Server`` (uvicorn in its own process; ``read_status``, ``metrics()``, ``get_json``),
``Metrics`` (Prometheus text: ``samples``, ``total``, ``by``, ``lines``), ``Traffic`` (statuses
and latencies: ``ok``, ``error_rate``, ``p50``, ``p95``, ``max``, ``throughput``), ``send``,
``closed_loop``, ``every``, ``probe`` (loop lag, from when each probe was due) and ``drive``
(the load), ``Row`` and ``comparison`` (the table),
``demo_main`` (``--duration``, ``--serve``, ``--port``), ``ScriptedModel``, ``ScriptedEmbedder``
and ``ProviderError`` (offline providers that take time, fail at a rate and count their calls).
"""

from examples._harness.cli import demo_main, serve_until_interrupted
from examples._harness.load import Client, Traffic, closed_loop, drive, every, probe, send
from examples._harness.metrics import Metrics
from examples._harness.modes import (
    CALLS_PATH,
    MODE_VARIABLE,
    STATUS_TOKEN_VARIABLE,
    after_mode,
    mount_call_counts,
    status_settings,
)
from examples._harness.scripted import (
    Completion,
    ProviderError,
    ScriptedEmbedder,
    ScriptedModel,
    count_tokens,
    similarity,
    vector_of,
)
from examples._harness.server import ADMIN, ROOT, STATUS_USER, Server, free_port
from examples._harness.table import Row, comparison

__all__ = [
    "ADMIN",
    "CALLS_PATH",
    "MODE_VARIABLE",
    "ROOT",
    "STATUS_TOKEN_VARIABLE",
    "STATUS_USER",
    "Client",
    "Completion",
    "Metrics",
    "ProviderError",
    "Row",
    "ScriptedEmbedder",
    "ScriptedModel",
    "Server",
    "Traffic",
    "after_mode",
    "closed_loop",
    "comparison",
    "count_tokens",
    "demo_main",
    "drive",
    "every",
    "free_port",
    "mount_call_counts",
    "probe",
    "send",
    "serve_until_interrupted",
    "similarity",
    "status_settings",
    "vector_of",
]
