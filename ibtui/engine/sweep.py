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

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable


from ibtui.config import Config, config_from_dict, load_preset
from ibtui.engine.summary import compression_table
from ibtui.rundir.reader import load_run, read_run_meta
from ibtui.rundir.store import CONFIG, CURVES, EVENTS, LOG, META, PLANES, atomic_write_bytes, open_append, utc_stamp
from ibtui.errors import UserError

SWEEP = "sweep.json"
RESULTS = "results.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
SHIPPED = (META, CONFIG, EVENTS, PLANES, CURVES, LOG)
"""Files a Ray task sends back when its node does not share the driver's file system."""


# ----------------------------------------------------------------------------- the grid


def split_values(text: str) -> list[str]:
    """Split ``a,b,[1,2],"x,y"`` at the commas outside brackets and quotes."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def parse_grid(item: str) -> tuple[str, list[str]]:
    """``KEY=v1,v2,...`` → (KEY, [v1, v2, ...]); values stay text (parsed as ``--set`` values)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--grid '{item}' is not of the form KEY=v1,v2,... (e.g. model.activation=tanh,relu)")
    values = split_values(text)
    if any(not v for v in values):
        raise UserError(f"--grid '{item}' has an empty value")
    if len(set(values)) != len(values):
        raise UserError(f"--grid '{item}' repeats a value")
    return key, values


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its directory name and its overrides ``((key, value), ...)``."""

    name: str
    overrides: tuple[tuple[str, str], ...]

    @property
    def items(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.overrides]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=._+-]+", "-", text).strip("-")


def cell_name(index: int, overrides: Iterable[tuple[str, str]], width: int) -> str:
    """``03-activation=relu,bin_size=0.3``: the index keeps names unique, the rest says what it is."""
    parts = ",".join(_slug(f"{k.split('.')[-1]}={v}") for k, v in overrides)
    return f"{index:0{width}d}-{parts}"[:120] if parts else f"{index:0{width}d}"


@dataclass
class SweepSpec:
    """What the user asked for: a preset, grid axes, fixed overrides, seeds per cell."""

    preset: str
    grid: list[tuple[str, list[str]]]
    sets: list[str] = field(default_factory=list)
    seeds: int | None = None

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.grid]
        if len(set(keys)) != len(keys):
            raise UserError(f"a key appears in two --grid options: {', '.join(sorted({k for k in keys if keys.count(k) > 1}))}")
        fixed = {s.partition("=")[0].strip() for s in self.sets}
        both = fixed.intersection(keys)
        if both:
            raise UserError(f"{', '.join(sorted(both))} is both a --grid axis and a --set override")
        if self.seeds is not None and self.seeds < 1:
            raise UserError(f"--seeds must be >= 1; got {self.seeds}")

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "grid": [[k, list(v)] for k, v in self.grid], "sets": list(self.sets),
                "seeds": self.seeds}

    @property
    def sweep_id(self) -> str:
        """Stable for the same command: ``<preset>-sweep-<8 hex digits of the spec>``."""
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{_slug(Path(self.preset).stem)}-sweep-{digest}"

    def cells(self) -> list[Cell]:
        combos = list(itertools.product(*[[(k, v) for v in values] for k, values in self.grid]))
        width = len(str(max(len(combos) - 1, 0)))
        return [Cell(cell_name(i, combo, width), tuple(combo)) for i, combo in enumerate(combos)]

    def config(self, cell: Cell, threads: int = 0, *extra: str) -> Config:
        """The cell's resolved configuration (UserError for a bad key or value); ``threads`` > 0
        caps its torch threads; ``extra`` overrides come last."""
        seeds = [f"train.seeds={self.seeds}"] if self.seeds is not None else []
        cap = [f"train.threads={threads}"] if threads else []
        return load_preset(self.preset, [*self.sets, *cell.items, *seeds, *cap, *extra])


# ----------------------------------------------------------------------------- one cell


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


def _set_aside(path: Path) -> None:
    """Move an unusable cell directory out of the way (its files are kept, never deleted)."""
    target = path.with_name(f"{path.name}.set-aside-{utc_stamp()}")
    path.rename(target)


def run_cell(raw_config: dict[str, Any], run_dir: str | Path, stop: Any = None) -> dict[str, Any]:
    """Run one cell to its end in this process: skip it if done, resume it if it has a
    checkpoint, else start it fresh at exactly ``run_dir``. Returns ``cell_result``."""
    from ibtui.engine.runner import execute, resume

    path = Path(run_dir)
    if path.exists():
        try:
            status = read_run_meta(path)["status"]
        except UserError:
            status = None
        if status == "done":
            return cell_result(path)
        if status is not None:
            try:
                resume(path, stop=stop)
                return cell_result(path)
            except UserError as exc:
                if "still being written" in str(exc):
                    raise
        _set_aside(path)  # no meta, or no checkpoint to resume from
    cfg = config_from_dict(raw_config, source=str(path / CONFIG))
    execute(cfg, stop=stop, runs_dir=path.parent, run_name=path.name)
    return cell_result(path)


def _limit_threads(raw_config: dict[str, Any]) -> None:
    """Every torch op of a worker on its share of the cores (``train.threads``), not only the
    engine's training and measurement blocks: cells side by side must not oversubscribe."""
    import torch

    threads = int(raw_config.get("train", {}).get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def _cell_process(raw_config: dict[str, Any], run_dir: str, reply: Any) -> None:
    """Entry point of a local worker process: SIGTERM stops the run like Ctrl+C (epochs kept).
    An error that leaves no run behind (e.g. a missing dataset) is sent on ``reply`` as one line."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        _limit_threads(raw_config)
        result = run_cell(raw_config, run_dir)
    except KeyboardInterrupt:
        os._exit(130)
    except Exception as exc:  # UserError and anything unexpected: reported, the cell retried
        reply.send(str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
        os._exit(2)
    os._exit(0 if result["status"] == "done" else 1)


# ----------------------------------------------------------------------------- the driver


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
            if path.exists():
                old = json.loads(path.read_text())
                if any(old.get(key) != value for key, value in description.items() if key != "id"):
                    raise UserError(f"{self.root} holds a different sweep (another preset, grid, --set or "
                                    f"--seeds); choose another --name")
                return
            atomic_write_bytes(path, (json.dumps({**description, "created": utc_stamp()}, indent=2) + "\n").encode())
        except OSError as exc:
            raise UserError(f"cannot write sweep directory {self.root}: {exc.strerror or exc}") from None
        except json.JSONDecodeError:
            raise UserError(f"{path} is not valid JSON; move it away or choose another --name") from None

    def pending(self) -> tuple[list[Cell], list[Cell]]:
        """(cells already done, cells to run)."""
        done, todo = [], []
        for cell in self.cells:
            try:
                status = read_run_meta(self.cell_dir(cell))["status"]
            except UserError:
                status = None
            (done if status == "done" else todo).append(cell)
        return done, todo

    def recorded_attempts(self) -> dict[str, int | None]:
        """Each cell's attempts in its latest line of results.jsonl (a torn or foreign line is skipped)."""
        attempts: dict[str, int | None] = {}
        try:
            lines = (self.root / RESULTS).read_bytes().splitlines()
        except OSError:
            return attempts
        for raw in lines:
            try:
                line = json.loads(raw)
            except ValueError:
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
        with open_append(self.root / RESULTS) as f:  # never through a symlink
            f.write((json.dumps(line) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        self.write_summaries()

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


def default_workers(n_cells: int) -> int:
    """One worker per CPU core, no more than there are cells."""
    return max(1, min(n_cells, os.cpu_count() or 1))


def _message(receive: Any) -> str | None:
    """The one-line error a worker process sent before exiting, if any (closes the pipe)."""
    try:
        return receive.recv() if receive.poll() else None
    except (EOFError, OSError):
        return None
    finally:
        receive.close()


def run_local(sweep: Sweep, cells: list[Cell], workers: int, retries: int,
              on_outcome: Callable[[Outcome], None], on_start: Callable[[Cell, int], None] = lambda c, a: None,
              poll_s: float = 1.0) -> bool:
    """Run ``cells`` in spawned processes, at most ``workers`` at once, each with cores/workers torch
    threads. Returns False when interrupted (Ctrl+C/SIGTERM: running cells are stopped, epochs kept)."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    queue = [(cell, 1) for cell in cells]
    running: dict[Any, tuple[Cell, int, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                cell, attempt = queue.pop(0)
                raw = sweep.spec.config(cell, threads).to_dict()
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_cell_process, args=(raw, str(sweep.cell_dir(cell)), send), daemon=False)
                process.start()
                send.close()
                running[process] = (cell, attempt, receive)
                on_start(cell, attempt)
            for process in [p for p in running if not p.is_alive()]:
                process.join()
                cell, attempt, receive = running.pop(process)
                message = _message(receive)
                try:
                    result = cell_result(sweep.cell_dir(cell))
                except UserError as exc:  # no run directory: the process failed before creating it
                    result = {"status": "failed", "error": message or str(exc)}
                if message and result.get("status") != "done":
                    result["error"] = message
                status = result.get("status")
                if status == "done":
                    on_outcome(Outcome(cell, "done", attempt, None, result, platform.node()))
                elif status == "stopped" or process.exitcode == 130:
                    on_outcome(Outcome(cell, "stopped", attempt, result.get("error"), result, platform.node()))
                else:
                    error = result.get("error") or f"worker process exited with code {process.exitcode}"
                    if attempt <= retries:
                        queue.insert(0, (cell, attempt + 1))
                    else:
                        on_outcome(Outcome(cell, "failed", attempt, error, result, platform.node()))
            if running:
                multiprocessing.connection.wait([p.sentinel for p in running], timeout=poll_s)
    except KeyboardInterrupt:
        for process in running:
            if process.is_alive():
                process.terminate()  # SIGTERM: the cell's run ends as `stopped`, epochs kept
        for process, (cell, attempt, _) in list(running.items()):
            process.join()
            try:
                result = cell_result(sweep.cell_dir(cell))
            except UserError:
                result = {}
            on_outcome(Outcome(cell, "stopped", attempt, None, result, platform.node()))
        return False
    return True


# ----------------------------------------------------------------------------- Ray


class CellFailed(RuntimeError):
    """A cell's run ended `failed`: raised inside a Ray task so that Ray retries it."""


def _ray_task(raw_config: dict[str, Any], run_dir: str, driver_host: str) -> dict[str, Any]:
    """Body of the Ray task: run the cell; ship its files back when this node is not the driver's."""
    _limit_threads(raw_config)
    result = run_cell(raw_config, run_dir)
    if result["status"] == "failed":
        raise CellFailed(result.get("error") or "run failed")
    host = platform.node()
    files = None
    if host != driver_host:
        files = {name: (Path(run_dir) / name).read_bytes() for name in SHIPPED if (Path(run_dir) / name).is_file()}
    return {"result": result, "host": host, "files": files}


def _first_line(exc: BaseException) -> str:
    """The innermost cause of a Ray error, one line."""
    cause = getattr(exc, "cause", None) or exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    lines = [line for line in text if line.strip() and not line.startswith(("Traceback", "  "))]
    return (lines[-1] if lines else type(cause).__name__)[:300]


def run_ray(sweep: Sweep, cells: list[Cell], address: str | None, retries: int, cpus_per_cell: float,
            gpus_per_cell: float, on_outcome: Callable[[Outcome], None],
            on_start: Callable[[Cell, int], None] = lambda c, a: None, init_kwargs: dict[str, Any] | None = None) -> bool:
    """Run ``cells`` as Ray tasks (``num_cpus``, ``num_gpus`` per task; ``max_retries`` = ``retries``
    for crashed workers and failed runs alike), streaming outcomes as tasks finish."""
    try:
        import ray
    except ImportError:
        raise UserError("the Ray backend needs Ray: pip install 'ibtui[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            local = address in (None, "local")  # a new single-node instance, on the loopback interface
            ray.init(**{"address": None if local else address, "include_dashboard": False, "log_to_driver": False,
                        "logging_level": logging.ERROR, **({"_node_ip_address": "127.0.0.1"} if local else {}),
                        **(init_kwargs or {})})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot connect to Ray at {address}: {_first_line(exc)}") from None
    threads = max(1, math.floor(cpus_per_cell))
    task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=retries,
                      retry_exceptions=True)(_ray_task)
    host = platform.node()
    refs = {}
    for cell in cells:
        raw = sweep.spec.config(cell, threads).to_dict()
        refs[task.remote(raw, str(sweep.cell_dir(cell).resolve()), host)] = cell
        on_start(cell, 1)
    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            cell = refs[ready[0]]
            try:
                reply = ray.get(ready[0])
            except Exception as exc:  # retries exhausted (or the task was cancelled)
                try:
                    result = cell_result(sweep.cell_dir(cell))
                except UserError:
                    result = {}
                on_outcome(Outcome(cell, "failed", retries + 1, _first_line(exc), result))
                continue
            if reply["files"] is not None:
                _write_shipped(sweep.cell_dir(cell), reply["files"])
            on_outcome(Outcome(cell, "done", None, None, reply["result"], reply["host"]))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        for ref in pending:
            on_outcome(Outcome(refs[ref], "stopped", None, None, {}))
        return False
    finally:
        if started_here:
            ray.shutdown()
    return True


def _write_shipped(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a remote cell's files where the driver keeps the sweep (no checkpoints: those stay remote)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name in SHIPPED:
            atomic_write_bytes(run_dir / name, data)
