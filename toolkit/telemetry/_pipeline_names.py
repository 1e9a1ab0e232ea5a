"""The pipeline names: fan-out branches, request deadlines, deferred work and offloaded calls
(:mod:`toolkit.pipelines`).

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.FANOUT_BRANCH_DURATION_METRIC``): code uses them from there, as every other name.
"""

from __future__ import annotations

# --- fan-out (toolkit.gather) ---------------------------------------------------------------

# --- request deadlines ------------------------------------------------------------------------

# --- deferred work (toolkit.defer, @toolkit.background) ---------------------------------------

# --- offloaded calls (@toolkit.offload, toolkit.run_sync) -------------------------------------
