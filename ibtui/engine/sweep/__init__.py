"""Sweeps: a preset × a grid of overrides, every cell an ordinary run directory.

``runs/<sweep-id>/`` holds
- ``sweep.json``: the sweep's spec (preset, grid, fixed overrides, seeds) and its cells (name and
  overrides each), written once, atomically; the same command always gives the same sweep id,
  so running it again finds this directory and skips the cells that are ``done``;
- ``results.jsonl``: append-only, one line per finished cell attempt (status, error, wall time);
- ``summary.json`` and ``summary.csv``: per cell its status, accuracy and, per plane and layer,
  peak and final I(X;T) (bits) and the compression (peak − final); rewritten atomically after
  every finished cell, so they stream while the sweep runs;
- ``<cell>/``: one run directory per cell (the usual contract of ``ibtui.rundir.store``).

Two backends run the cells: ``local`` (one spawned process per cell, at most ``workers`` at once)
and ``ray`` (Ray tasks with ``num_cpus``/``num_gpus`` requests and Ray's own retries). A cell whose
run ends ``failed`` (or whose process dies) is retried ``retries`` times, resuming from its last
checkpoint, then reported as failed in the summary; nothing is dropped silently.
"""

from ibtui.engine.sweep.local import default_workers, run_cell, run_local
from ibtui.engine.sweep.ray import ray_session, run_ray
from ibtui.engine.sweep.results import CSV_COLUMNS, Outcome, Sweep, cell_result, summary_csv
from ibtui.engine.sweep.spec import (RESULTS, SHIPPED, SUMMARY_CSV, SUMMARY_JSON, SWEEP, Cell, SweepSpec, cell_name,
                                     parse_grid, split_values)

__all__ = ["Cell", "CSV_COLUMNS", "Outcome", "RESULTS", "SHIPPED", "SUMMARY_CSV", "SUMMARY_JSON", "SWEEP", "Sweep",
           "SweepSpec", "cell_name", "cell_result", "default_workers", "parse_grid", "ray_session", "run_cell", "run_local", "run_ray",
           "split_values", "summary_csv"]
