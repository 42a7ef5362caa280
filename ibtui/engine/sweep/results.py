"""A sweep directory's results: each cell's row (through the one run reader), results.jsonl,
summary.json and summary.csv, written atomically as cells finish."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ibtui.engine.summary import compression_table
from ibtui.rundir.reader import load_run, read_run_meta, refuse_symlinked_cell
from ibtui.rundir.store import atomic_write_bytes, open_append, read_file, utc_stamp
from ibtui.errors import UserError
from ibtui.engine.sweep.spec import Cell, SweepSpec, RESULTS, SUMMARY_CSV, SUMMARY_JSON, SWEEP


def cell_result(run_dir: Path) -> dict[str, Any]:
    """A cell's row, read through the one reader (``load_run``): status, accuracy, and per plane
    and layer peak and final I(X;T), final I(T;Y), compression (bits; for ensembles the mean of
    the members' values ± their sd: ``ibtui.engine.summary``). A malformed cell directory gives
    status ``failed`` with the reader's one-line reason."""
    result: dict[str, Any] = {"status": "failed", "error": None, "epochs_done": None, "epochs_total": None,
                              "wall_seconds": None, "seeds": None, "test_acc": None, "train_acc": None, "planes": {}}
    try:
        run = load_run(run_dir)
    except UserError as exc:
        return {**result, "error": str(exc)}
    meta = run.meta
    wall = meta.get("wall_seconds")
    result.update(status=run.status, error=meta.get("error"), epochs_done=meta.get("epochs_done"),
                  epochs_total=meta.get("epochs_total"), seeds=meta.get("seeds"),
                  wall_seconds=float(wall) if isinstance(wall, (int, float)) and math.isfinite(wall) else None)
    if not run.records:
        return result
    last = run.records[-1]
    result.update(test_acc=last.test_acc, train_acc=last.train_acc)
    for plane in meta["planes"]:
        data = run.plane(plane)
        if not len(data.epochs):
            continue
        saturated = data.saturated
        result["planes"][plane] = compression_table(
            data.epochs, data.members_ixt, data.members_ity, run.layers, meta.get("h_x"), meta.get("h_y"),
            saturated[-1] if saturated is not None else None)
    return result


@dataclass
class Outcome:
    """What the driver knows of a cell after its last attempt."""

    cell: Cell
    status: str  # done | failed | stopped
    attempts: int | None  # tries of the command that ran it (results.jsonl); None under Ray, whose retries are its own
    error: str | None
    result: dict[str, Any]
    host: str = ""


class Sweep:
    """The sweep directory: spec, cells, results log and summaries (written atomically)."""

    def __init__(self, spec: SweepSpec, runs_dir: str | Path, name: str | None = None) -> None:
        self.spec = spec
        self.cells = spec.cells()
        self.root = Path(runs_dir) / (name or spec.sweep_id)
        self.outcomes: dict[str, Outcome] = {}

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / cell.name

    def open(self) -> None:
        """Create the sweep directory and ``sweep.json``, or check an existing one is the same sweep."""
        description = {**self.spec.to_dict(), "id": self.root.name,
                       "cells": [{"name": c.name, "overrides": dict(c.overrides)} for c in self.cells]}
        path = self.root / SWEEP
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._refuse_special(RESULTS)
            if path.exists():
                old = json.loads(read_file(path, limit=16 << 20))
                if not isinstance(old, dict):
                    raise UserError(f"{path} is not a sweep description; move it away or choose another --name")
                if any(old.get(key) != value for key, value in description.items() if key != "id"):
                    raise UserError(f"{self.root} holds a different sweep (another preset, grid, --set or "
                                    f"--seeds); choose another --name")
                return
            atomic_write_bytes(path, (json.dumps({**description, "created": utc_stamp()}, indent=2) + "\n").encode())
        except OSError as exc:
            raise UserError(f"cannot write sweep directory {self.root}: {exc.strerror or exc}") from None
        except (ValueError, RecursionError):
            raise UserError(f"{path} is not valid JSON; move it away or choose another --name") from None

    def _refuse_special(self, name: str) -> None:
        """A file of the sweep that is appended to must be a regular file (not a symlink, which could
        point outside, nor a FIFO, which would block): refused up front, before any cell runs."""
        try:
            mode = os.lstat(self.root / name).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise UserError(f"{self.root / name} is not a regular file (a symlink or a special file); "
                            f"move it away or choose another --name")

    def remove_if_unstarted(self) -> None:
        """Remove the sweep directory when it holds nothing but its ``sweep.json`` (no cell was
        started: the backend could not start). Called only by the command that created it."""
        try:
            if [p.name for p in self.root.iterdir()] == [SWEEP]:
                (self.root / SWEEP).unlink()
                self.root.rmdir()
        except OSError:
            pass

    def pending(self) -> tuple[list[Cell], list[Cell]]:
        """(cells already done, cells to run)."""
        done, todo = [], []
        for cell in self.cells:
            try:
                refuse_symlinked_cell(self.cell_dir(cell))
                status = read_run_meta(self.cell_dir(cell))["status"]
            except UserError:
                status = None
            (done if status == "done" else todo).append(cell)
        return done, todo

    def recorded_attempts(self) -> dict[str, int | None]:
        """Each cell's attempts in its latest line of results.jsonl (a torn or foreign line is skipped)."""
        attempts: dict[str, int | None] = {}
        try:
            lines = read_file(self.root / RESULTS).splitlines()
        except (OSError, UserError):
            return attempts
        for raw in lines:
            try:
                line = json.loads(raw)
            except (ValueError, RecursionError):  # torn, not UTF-8, or nested beyond reason
                continue
            if not (isinstance(line, dict) and isinstance(line.get("cell"), str)):
                continue
            value = line.get("attempts")
            if value is None or (isinstance(value, int) and not isinstance(value, bool)):
                attempts[line["cell"]] = value
        return attempts

    def record(self, outcome: Outcome) -> None:
        """Append the outcome to results.jsonl and rewrite the summaries."""
        self.outcomes[outcome.cell.name] = outcome
        line = {"cell": outcome.cell.name, "status": outcome.status, "attempts": outcome.attempts,
                "error": outcome.error, "host": outcome.host, "wall_seconds": outcome.result.get("wall_seconds"),
                "time": utc_stamp()}
        try:
            with open_append(self.root / RESULTS) as f:  # never through a symlink
                f.write((json.dumps(line) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            self.write_summaries()
        except OSError as exc:
            raise UserError(f"cannot record the outcome of {outcome.cell.name} in {self.root}: "
                            f"{exc.strerror or exc}") from None

    def summary(self) -> dict[str, Any]:
        cells = []
        for cell in self.cells:
            outcome = self.outcomes.get(cell.name)
            row: dict[str, Any] = {"name": cell.name, "overrides": dict(cell.overrides),
                                   "run_dir": str(self.cell_dir(cell))}
            if outcome is None:
                row.update(status="pending", attempts=0, error=None)
            else:
                row.update(outcome.result)
                row.update(status=outcome.status, attempts=outcome.attempts, error=outcome.error)
            cells.append(row)
        counts = {s: sum(c["status"] == s for c in cells) for s in ("done", "failed", "stopped", "pending")}
        return {"id": self.root.name, **self.spec.to_dict(), "counts": counts, "cells": cells}

    def write_summaries(self) -> None:
        summary = self.summary()
        atomic_write_bytes(self.root / SUMMARY_JSON, (json.dumps(summary, indent=2) + "\n").encode())
        atomic_write_bytes(self.root / SUMMARY_CSV, summary_csv(summary).encode())


CSV_COLUMNS = ["cell", "status", "attempts", "seeds", "test_acc", "train_acc", "wall_seconds", "plane", "layer",
               "statistic", "peak_ixt", "peak_ixt_sd", "peak_epoch", "peak_epoch_sd", "final_ixt", "final_ixt_sd",
               "final_ity", "final_ity_sd", "compression", "compression_sd", "caps", "error"]


def summary_csv(summary: dict[str, Any]) -> str:
    """One row per cell, plane and layer (one row with empty MI columns for a cell without planes);
    a column per grid key; I(X;T), I(T;Y) and compression in bits. For ensembles every value is the
    mean over members of each member's own value and ``*_sd`` their standard deviation (the
    ``statistic`` column says so); ``caps`` names the caps a final value sits at."""
    keys = [k for k, _ in summary["grid"]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, *CSV_COLUMNS])
    for cell in summary["cells"]:
        seeds = cell.get("seeds")
        base = {"cell": cell["name"], "status": cell["status"], "attempts": cell.get("attempts", 0),
                "seeds": len(seeds) if isinstance(seeds, list) else "", "test_acc": cell.get("test_acc"),
                "train_acc": cell.get("train_acc"), "wall_seconds": cell.get("wall_seconds"),
                "error": cell.get("error") or ""}
        rows = [{**base, "plane": plane, **row} for plane, table in (cell.get("planes") or {}).items() for row in table]
        for row in rows or [base]:
            row = {**row, "seeds": base["seeds"], "caps": "; ".join(row.get("caps") or [])}
            writer.writerow([cell["overrides"].get(k, "") for k in keys]
                            + ["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    return buffer.getvalue()
