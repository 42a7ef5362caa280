"""The lifecycle of a run: ``execute`` (a new run) and ``resume`` (in place), around the loop of
``ibtui.engine.loop.Engine``; the run's outcome in meta.json whatever happens (``_drive``); the
summary. ``execute(cfg)`` is the one engine behind every front door. It validates everything
(device, dataset) *before* creating a run directory. Events go to ``on_event`` (a callable) for
progress bars or the app's queue:

- ``{"type": "start", "run_dir", "meta"}``
- ``{"type": "epoch", "epoch", "epochs", "train_loss", "train_acc", "test_loss", "test_acc"}`` every epoch
- ``{"type": "measure", ...}``: a ``MeasureRecord``'s JSON (``ibtui.rundir.records``), every measured epoch
- ``{"type": "end", "status", "error", "summary"}``
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import ibtui
from ibtui.config import Config, all_planes
from ibtui.engine import signals
from ibtui.engine.loop import Engine, EventSink, StopFlag, _finite, plane_arrays
from ibtui.engine.measure import Diverged
from ibtui.engine.phases import WINDOW, snr, transition_epochs
from ibtui.engine.prepare import Prepared, prepare
from ibtui.engine.summary import compression_table
from ibtui.errors import UserError
from ibtui.rundir.reader import Run, load_run, writer_alive
from ibtui.rundir.store import STOP_REQUEST, RunStore, clear_stop_request, read_curves_log, stop_requested

__all__ = ["execute", "resume", "prepare", "Engine", "summarize"]


def summarize(engine: Engine, status: str, wall_s: float, error: str | None) -> dict[str, Any]:
    """Per plane and layer: final and peak I(X;T) (with its epoch), final I(T;Y), compression."""
    records = [engine.records[e] for e in sorted(engine.records)]
    last = records[-1] if records else {}
    layers = engine.model.layer_names
    planes: dict[str, Any] = {}
    if records:
        arrays = plane_arrays(records, engine.planes, engine.model.size)
        h_x, h_y = engine.prep.mi_set.h_x, engine.prep.mi_set.h_y
        for name in engine.planes:
            members = f"{name}.ixt_seeds" in arrays
            planes[name] = compression_table(
                arrays["epochs"], arrays[f"{name}.ixt_seeds" if members else f"{name}.ixt"],
                arrays[f"{name}.ity_seeds" if members else f"{name}.ity"], layers, h_x, h_y,
                arrays[f"{name}.saturated"][-1] if f"{name}.saturated" in arrays else None)
    phases: dict[str, Any] = {}
    if engine.cfg.train.gradient_stats and engine.curves["epoch"]:
        norms = [np.asarray([engine.curves[f"grad_{kind}.{i}"] for i in range(len(layers))]).T
                 for kind in ("mean", "std")]
        phases = {"gradient_phases": {
            "transition_epoch": transition_epochs(engine.curves["epoch"], norms[0], norms[1]),
            "window": WINDOW, "final_snr": [_finite(float(v)) for v in snr(norms[0][-1], norms[1][-1])]}}
    return {
        **phases,
        "run_dir": str(engine.store.path), "status": status, "error": error,
        "epochs_done": engine.epochs_done, "epochs_total": engine.cfg.train.epochs,
        "measured_epochs": len(records), "wall_seconds": round(wall_s, 3),
        "epochs_per_second": round(engine.epochs_done / wall_s, 2) if wall_s > 0 else None,
        "last_measured_epoch": last.get("epoch"),
        "train_acc": last.get("train_acc"), "test_acc": last.get("test_acc"),
        "train_loss": last.get("train_loss"), "test_loss": last.get("test_loss"),
        **({"float_test_acc": last["float_test_acc"]} if "float_test_acc" in last else {}),
        "device": str(engine.prep.device), "seeds": engine.model.seeds, "layers": layers, "planes": planes,
    }


def _versions() -> dict[str, str]:
    return {"ibtui": ibtui.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def execute(cfg: Config, on_event: EventSink | None = None, stop: StopFlag | None = None,
            runs_dir: str | Path | None = None, pause: StopFlag | None = None,
            prepared: Prepared | None = None, run_name: str | None = None,
            info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end (or until ``stop`` is set / Ctrl+C). Returns the summary dict.

    ``stop`` and ``pause`` are anything with ``is_set()`` (threading or multiprocessing Events).
    ``prepared``: the result of ``prepare(cfg)`` when the caller validated the input first.
    ``run_name``: the run directory's exact name (default ``<preset>-<UTC time>``).
    ``info``: what tells the run apart, recorded in meta.json (``ibtui.runinfo.run_info``: name,
    tags, note, overrides of the preset).

    Raises UserError for bad input before anything is written. Once the run directory exists
    every outcome is recorded in meta.json: done, stopped (stop flag or KeyboardInterrupt,
    measured epochs kept) or failed (divergence or an unexpected error, with the reason).
    """
    prep = prepared or prepare(cfg)
    meta = {
        "preset": cfg.preset, "description": cfg.description, "versions": _versions(),
        "device": str(prep.device), "seed": cfg.train.seed, "seeds": prep.model.seeds, "dataset": prep.dataset.name,
        "dataset_description": prep.dataset.description, "layers": prep.model.layer_names,
        "planes": all_planes(cfg), "epochs_total": cfg.train.epochs, "epochs_done": 0,
        "n_mi": prep.mi_set.n, "h_x": prep.mi_set.h_x, "h_y": prep.mi_set.h_y,
        "n_train": prep.train_idx.shape[1], "n_test": prep.test_idx.shape[1], "batch_size": cfg.train.batch_size,
        "host": platform.node(), "pid": os.getpid(),
        "argv": sys.argv, **(info or {}),
    }
    # built (with its optimiser: torch imports for seconds) before anything is written: a stop
    # signal until the run directory exists leaves nothing behind
    engine = Engine(prep, None, lambda event: None, logging.getLogger("ibtui.run"))
    signals.pause_point("before-create")

    def open_store() -> RunStore:
        store = RunStore.create(Path(runs_dir or cfg.store.runs_dir), cfg.preset, cfg.to_toml(), meta, run_name)
        signals.pause_point("created")
        return store

    return _drive(engine, open_store, on_event, stop, pause, f"started on {prep.device}: {cfg.description}")


def last_checkpoint(run: Run, epochs: int) -> dict[str, np.ndarray] | None:
    """The arrays of the run's latest measured epoch whose checkpoint is complete (its
    ``resume.epoch`` equals the record's epoch, within [0, ``epochs``]), or None."""
    for record in reversed(run.records):
        if record.epoch > epochs:
            continue
        try:
            arrays = run.checkpoint(record.epoch)
        except UserError:
            continue
        saved = np.asarray(arrays.get("resume.epoch", -1))
        if saved.shape == () and saved.dtype.kind in "iu" and int(saved) == record.epoch:
            return arrays
    return None


def resume(run_dir: str | Path, on_event: EventSink | None = None, stop: StopFlag | None = None,
           pause: StopFlag | None = None) -> dict[str, Any]:
    """Continue a stopped, failed or killed run from its last complete checkpoint, in place.

    On CPU the epochs after the checkpoint are the same as those of an uninterrupted run with
    the same seed (weights, optimiser state and the batch-order RNG are restored), and the run
    directory ends as the uninterrupted run's (events, planes and curves). Everything is read
    (``load_run``: validated) and restored before anything is written: a resume refused
    (UserError) or interrupted while it restores leaves the directory untouched. A run being
    written by another process is refused. A run stopped before its first measured epoch starts
    over in place.
    """
    run = load_run(run_dir)
    path = run.path
    if run.meta["status"] == "done":
        raise UserError(f"{path} is already done; nothing to resume")
    if writer_alive(path, run.meta) and run.meta.get("pid") != os.getpid():
        raise UserError(f"{path} is still being written by another process")
    cfg = run.settings()
    prep = prepare(cfg, from_run=True)
    point = last_checkpoint(run, cfg.train.epochs)
    engine = Engine(prep, None, lambda event: None, logging.getLogger("ibtui.resume"))
    if point is not None:
        epoch = int(point["resume.epoch"])
        curves: dict[str, Any] | None = read_curves_log(path)
        complete = curves is not None
        if curves is None:  # a run of an older version: its curves.npz
            curves = run.curves
        # UserError when anything does not fit; nothing is written before this returns
        engine.restore(point, [r.to_json() for r in run.records], curves, complete)
    elif not run.records:  # stopped before its first measurement: nothing to lose, start over in place
        epoch = -1  # (the initial weights, split and batch order come from the seed alone)
    else:
        raise UserError(f"{path} has no complete checkpoint to resume from; start it again with `ibtui run`")

    def open_store() -> RunStore:
        store = RunStore.open(path, epoch)
        try:
            store.write_meta(status="running", error=None, pid=os.getpid(), host=platform.node(),
                             resumed_from=epoch if epoch >= 0 else None)
        except OSError as exc:
            store.close()
            raise UserError(f"cannot write {path / 'meta.json'}: {exc.strerror or exc}") from None
        signals.pause_point("resume-opened")
        return store

    what = f"resumed after epoch {epoch}" if epoch >= 0 else "started again (stopped before its first measurement)"
    return _drive(engine, open_store, on_event, stop, pause, what)


class _QuietHandler(logging.StreamHandler):
    """worker.log is best effort: a full disk must not print logging tracebacks on the terminal."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class StopOrRequest:
    """The run's stop flag: ``stop`` (the caller's, may be None) or a ``stop.request`` file in the
    run directory (``ibtui stop``, or the app for a run another process writes). One stat per check
    (the engine checks once per epoch)."""

    def __init__(self, stop: StopFlag | None, run_dir: Path, log: logging.Logger) -> None:
        self.stop, self.run_dir, self.log, self.logged = stop, run_dir, log, False

    def is_set(self) -> bool:
        if self.stop is not None and self.stop.is_set():
            return True
        if stop_requested(self.run_dir):
            if not self.logged:
                self.log.info("stop requested (%s): stopping after this epoch", STOP_REQUEST)
                self.logged = True
            return True
        return False


def _drive(engine: Engine, open_store: Callable[[], RunStore], on_event: EventSink | None, stop: StopFlag | None,
           pause: StopFlag | None, what: str) -> dict[str, Any]:
    """Open the run's store (``open_store``: it creates the directory, or reopens it and marks it
    running; UserError when it cannot, with nothing left behind), run ``engine`` on it and record
    the outcome in meta.json whatever happens.

    Stop signals (``ibtui.engine.signals``) are held from before the store is opened until the run
    is under the try below, and again from the first stop on, so once meta.json says ``running``
    every way out (a stop signal at any instant, a second one while stopping, an error) ends with
    the final meta.json written: ``done``, ``stopped`` or ``failed``, never ``running``.
    """
    emit: EventSink = on_event or (lambda event: None)
    with signals.stop_on_signals((signal.SIGINT,), only_replace_default=True):  # a library caller's Ctrl+C
        level = signals.hold()
        try:
            store = open_store()
            engine.store = store
            return _record_outcome(engine, store, emit, stop, pause, what, level)
        finally:
            signals.reset(level)


def _open_log(store: RunStore) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger(f"ibtui.run.{store.path.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = _QuietHandler(store.log_stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


def _record_outcome(engine: Engine, store: RunStore, emit: EventSink, stop: StopFlag | None, pause: StopFlag | None,
                    what: str, level: int) -> dict[str, Any]:
    """Run the engine on its open store (stop signals held on entry, at ``level`` + 1) and write
    the final arrays and meta.json, with stop signals held, whatever happens."""
    log, handler = _open_log(store)
    started = time.perf_counter()
    status, error = "failed", None
    try:
        signals.release(level)  # a stop that came while the store opened is taken here, as a stop
        log.info("run %s %s", store.path.name, what)
        engine.emit, engine.log = emit, log
        emit({"type": "start", "run_dir": str(store.path), "meta": store.meta})
        status = engine.run(StopOrRequest(stop, store.path, log), pause)
        signals.hold()  # the outcome is known: nothing interrupts its recording
    except KeyboardInterrupt:  # stop signals are held from its raising on
        status = "stopped"
    except Diverged as exc:
        status, error = "failed", f"diverged: {exc}"
    except Exception as exc:  # recorded in meta.json and worker.log, reported in the summary
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("run failed:\n%s", traceback.format_exc())
    finally:
        signals.hold()
        wall = time.perf_counter() - started
        status, error = _write_final(engine, store, log, status, error, wall)
        with contextlib.suppress(OSError, UserError):
            clear_stop_request(store.path)  # answered: a later resume is not stopped by it
        log.removeHandler(handler)
        store.close()
    summary = summarize(engine, status, wall, error)
    emit({"type": "end", "status": status, "error": error, "summary": summary})
    return summary


def _write_final(engine: Engine, store: RunStore, log: logging.Logger, status: str, error: str | None,
                 wall: float) -> tuple[str, str | None]:
    """The final planes.npz, curves.npz and meta.json; a write that fails makes the run ``failed``
    (events.jsonl still holds every measured epoch). Returns the status and error recorded."""
    try:
        engine.write_arrays(force=True)
    except Exception as exc:  # disk full, read-only... (OSError); anything else is a bug, still recorded
        status, error = "failed", error or f"cannot write arrays: {exc}"
        log.error("final arrays not written:\n%s", traceback.format_exc())
    signals.pause_point("final")
    try:
        store.write_meta(status=status, error=error, epochs_done=engine.epochs_done, wall_seconds=round(wall, 3))
    except OSError as exc:
        status, error = "failed", error or f"cannot write meta.json: {exc}"
        log.error("final meta.json not written: %s", exc)
    log.info("run %s ended: %s%s", store.path.name, status, f" ({error})" if error else "")
    return status, error
