"""The training loop: train, measure the information plane on schedule, store, emit events.

``execute(cfg)`` is the one engine behind every front door. It validates everything
(device, dataset) *before* creating a run directory, then trains epoch by epoch; at each
measured epoch it computes every estimator's plane on the MI set, appends one line to
``events.jsonl`` and saves the weights. Events also go to ``on_event`` (a callable) for
progress bars or the TUI's queue:

- ``{"type": "start", "run_dir", "meta"}``
- ``{"type": "epoch", "epoch", "epochs", "train_loss", "train_acc", "test_loss", "test_acc"}`` every epoch
- ``{"type": "measure", "epoch", ..., "planes": {plane: {"ixt": [...], "ity": [...]}}, "schedule": {...}}``
- ``{"type": "end", "status", "error", "summary"}``
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
import logging
import math
import platform
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

import ibtui
from ibtui.config import Config, all_planes, config_from_dict, read_toml
from ibtui.engine.data import Dataset, load_dataset
from ibtui.engine.model import MLP
from ibtui.engine.schedule import Schedule, plane_distance
from ibtui.engine.store import (CONFIG, CURVES, LOG, PLANES, RunStore, checkpoint_path, read_events, read_meta,
                                read_npz, run_file)
from ibtui.errors import UserError
from ibtui.estimators import MISet

EventSink = Callable[[dict[str, Any]], None]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class Diverged(RuntimeError):
    """Loss or activations became NaN/inf."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available else cpu; asking for cuda without one is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' was asked for but CUDA is not available on this machine; use --device cpu")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, name: str, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """Adam or SGD; the fused kernels where this torch has them (same maths, fewer launches)."""
    params = list(model.parameters())
    cls, kwargs = (torch.optim.Adam, {}) if name == "adam" else (torch.optim.SGD, {"momentum": momentum})
    try:
        return cls(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch or unsupported device
        return cls(params, lr=lr, **kwargs)


@dataclass
class Prepared:
    """Everything validated and built before a run directory exists."""

    cfg: Config
    device: torch.device
    dataset: Dataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_mi: torch.Tensor
    mi_set: MISet
    model: MLP


def split_indices(dataset: Dataset, train_fraction: float, shuffle: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices: the dataset's own test split if it has one, else a (shuffled) fraction."""
    n = len(dataset.y)
    if dataset.is_test is not None:
        return np.flatnonzero(~dataset.is_test), np.flatnonzero(dataset.is_test)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    n_train = max(1, min(n, int(round(train_fraction * n))))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def prepare(cfg: Config) -> Prepared:
    """Resolve the device, load and split the data, build the model. Raises UserError."""
    device = resolve_device(cfg.train.device)
    dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir or None)
    train_idx, test_idx = split_indices(dataset, cfg.data.train_fraction, cfg.data.shuffle, cfg.train.seed)
    mi_idx = {"all": np.arange(len(dataset.y)), "train": train_idx, "test": test_idx}[cfg.data.mi_set]
    if len(mi_idx) == 0:
        raise UserError(f"data.mi_set = '{cfg.data.mi_set}' selects no samples (train_fraction = {cfg.data.train_fraction})")
    if cfg.data.mi_max_samples and len(mi_idx) > cfg.data.mi_max_samples:
        rng = np.random.default_rng(cfg.train.seed + 1)
        mi_idx = np.sort(rng.choice(mi_idx, cfg.data.mi_max_samples, replace=False))

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    torch.manual_seed(cfg.train.seed)
    model = MLP(dataset.x.shape[1], cfg.model.widths, dataset.n_classes, cfg.model.activation, cfg.model.init)
    return Prepared(
        cfg=cfg, device=device, dataset=dataset,
        x_train=tensor(dataset.x[train_idx], torch.float32), y_train=tensor(dataset.y[train_idx], torch.int64),
        x_test=tensor(dataset.x[test_idx], torch.float32), y_test=tensor(dataset.y[test_idx], torch.int64),
        x_mi=tensor(dataset.x[mi_idx], torch.float32),
        mi_set=MISet.from_arrays(dataset.x[mi_idx], dataset.y[mi_idx], device=device),
        model=model.to(device),
    )


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights in host memory (delta_exact keeps one per skipped epoch)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch CPU threads (0 leaves the current setting)."""
    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@torch.no_grad()
def _evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy) on a whole set; NaN for an empty set."""
    if len(y) == 0:
        return math.nan, math.nan
    logits = model(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def _finite(value: float) -> float | None:
    """JSON-safe number: None for NaN/inf."""
    return value if math.isfinite(value) else None


class Engine:
    """One run: owns the model, optimiser, schedule and store. Use :func:`execute`."""

    def __init__(self, prep: Prepared, store: RunStore, on_event: EventSink, log: logging.Logger) -> None:
        self.prep, self.cfg, self.store, self.emit, self.log = prep, prep.cfg, store, on_event, log
        self.model = prep.model
        t = self.cfg.train
        self.opt = make_optimizer(self.model, t.optimizer, t.lr, t.momentum)
        self.batch_gen = torch.Generator().manual_seed(t.seed)
        self.schedule = Schedule(self.cfg.schedule, t.epochs)
        self.planes = all_planes(self.cfg)
        self.distance_plane = self.cfg.schedule.estimator or self.planes[0]
        self.records: dict[int, dict[str, Any]] = {}  # measured epoch → event
        self.curves: dict[str, list[float]] = {k: [] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")}
        self.epochs_done = 0
        self.previous: dict[str, Any] | None = None  # loop state (set by restore() when resuming)
        self.next_epoch: int | None = self.schedule.first()
        self.epoch = 0
        self._scratch: MLP | None = None
        self._last_array_write = 0.0

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> tuple[float, float]:
        """One pass over the shuffled training set; returns mean minibatch loss and accuracy."""
        p, bs = self.prep, self.cfg.train.batch_size
        n = len(p.y_train)
        order = torch.randperm(n, generator=self.batch_gen).to(p.device)
        self.model.train()
        loss_sum = torch.zeros((), device=p.device)
        correct = torch.zeros((), device=p.device)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            logits = self.model(p.x_train[idx])
            loss = F.cross_entropy(logits, p.y_train[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == p.y_train[idx]).sum()
        train_loss = float(loss_sum) / n
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss became {train_loss} at epoch {self.epochs_done + 1}")
        return train_loss, float(correct) / n

    # ------------------------------------------------------------------ measurement
    @torch.no_grad()
    def measure(self, model: MLP, epoch: int) -> dict[str, Any]:
        """Every estimator's plane for ``model`` on the MI set, plus loss/accuracy."""
        p = self.prep
        model.eval()
        t0 = time.perf_counter()
        layers = model.forward_layers(p.x_mi)
        for i, layer in enumerate(layers):
            if not torch.isfinite(layer).all():
                raise Diverged(f"activations of layer {model.layer_names[i]} are NaN/inf at epoch {epoch}")
        planes: dict[str, dict[str, list[float]]] = {}
        with torch_threads(self.cfg.train.threads):  # 0: all cores (the pairwise KDE work scales)
            for est in self.cfg.estimators.values():
                for name, (ixt, ity) in est.estimate(layers, p.mi_set).items():
                    planes[name] = {"ixt": [float(v) for v in ixt], "ity": [float(v) for v in ity]}
        train_loss, train_acc = _evaluate(model, p.x_train, p.y_train)
        test_loss, test_acc = _evaluate(model, p.x_test, p.y_test)
        return {
            "type": "measure", "epoch": epoch,
            "train_loss": _finite(train_loss), "train_acc": _finite(train_acc),
            "test_loss": _finite(test_loss), "test_acc": _finite(test_acc),
            "planes": planes, "mi_seconds": round(time.perf_counter() - t0, 6),
        }

    def measure_saved(self, weights: dict[str, torch.Tensor], epoch: int) -> dict[str, Any]:
        """Measure a skipped epoch from its kept weights (delta_exact bisection)."""
        if self._scratch is None:
            self._scratch = copy.deepcopy(self.model)
        self._scratch.load_state_dict(weights)
        return self.measure(self._scratch, epoch)

    def point(self, record: dict[str, Any]) -> np.ndarray:
        plane = record["planes"][self.distance_plane]
        return np.stack([plane["ixt"], plane["ity"]], axis=1)

    def refine(self, lo: dict[str, Any], hi: dict[str, Any], kept: dict[int, dict[str, torch.Tensor]]
               ) -> tuple[list[dict[str, Any]], int, float]:
        """Bisect between two measurements while the plane moved more than delta.

        Returns the new records (in epoch order), the width of the last gap kept and its distance.
        """
        distance = plane_distance(self.point(lo), self.point(hi))
        mid_epoch = self.schedule.should_bisect(lo["epoch"], hi["epoch"], distance)
        if mid_epoch is None:
            return [], hi["epoch"] - lo["epoch"], distance
        mid = self.measure_saved(kept[mid_epoch], mid_epoch)
        mid["schedule"] = {"kind": "delta_exact", "decision": "bisect", "between": [lo["epoch"], hi["epoch"]],
                           "distance": distance, "skip": None}
        left, _, _ = self.refine(lo, mid, kept)
        right, gap, last_distance = self.refine(mid, hi, kept)
        return [*left, mid, *right], gap, last_distance

    def record(self, rec: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        """Checkpoint, then the event line (so every event has its weights), then meta and the UI."""
        self.records[rec["epoch"]] = rec
        if self.cfg.store.checkpoints:
            self.store.write_checkpoint(rec["epoch"], weights)
        self.store.append_event(rec)
        self.store.write_meta(epochs_done=self.epochs_done, measured_epochs=len(self.records))
        self.emit(rec)

    # ------------------------------------------------------------------ arrays
    def write_arrays(self, force: bool = False) -> None:
        """planes.npz (sorted by epoch) and curves.npz; throttled to once a second unless forced."""
        now = time.monotonic()
        if not force and now - self._last_array_write < 1.0:
            return
        self._last_array_write = now
        epochs = sorted(self.records)
        arrays: dict[str, np.ndarray] = {"epochs": np.asarray(epochs, dtype=np.int64)}
        for name in self.planes:
            for key in ("ixt", "ity"):
                arrays[f"{name}.{key}"] = np.asarray([self.records[e]["planes"][name][key] for e in epochs],
                                                     dtype=np.float64).reshape(len(epochs), -1)
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            arrays[key] = np.asarray([np.nan if self.records[e][key] is None else self.records[e][key]
                                      for e in epochs], dtype=np.float64)
        self.store.write_arrays(PLANES, arrays)
        self.store.write_arrays(CURVES, {k: np.asarray(v) for k, v in self.curves.items()})

    # ------------------------------------------------------------------ main loop
    def wait_while_paused(self, stop: StopFlag | None, pause: StopFlag | None) -> None:
        while pause is not None and pause.is_set() and not (stop is not None and stop.is_set()):
            time.sleep(0.05)

    # ------------------------------------------------------------------ resume
    def resume_state(self) -> dict[str, np.ndarray]:
        """What a checkpoint needs beyond the weights to continue exactly: optimiser, batch RNG, skip."""
        out = {"resume.rng": self.batch_gen.get_state().numpy(), "resume.skip": np.asarray(self.schedule.skip)}
        for index, state in self.opt.state_dict()["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"resume.opt.{index}.{name}"] = value.detach().cpu().numpy()
        return out

    def restore(self, arrays: dict[str, np.ndarray], events: list[dict[str, Any]], curves: dict[str, np.ndarray]) -> None:
        """Continue after the checkpointed epoch of ``arrays`` (see :func:`resume`)."""
        epoch = int(arrays["resume.epoch"])
        weights = {k: torch.as_tensor(v) for k, v in arrays.items() if not k.startswith("resume.")}
        self.model.load_state_dict(weights)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            if key.startswith("resume.opt."):
                index, name = key[len("resume.opt."):].split(".", 1)
                state.setdefault(int(index), {})[name] = torch.as_tensor(value).to(self.prep.device)
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})
        self.batch_gen.set_state(torch.as_tensor(arrays["resume.rng"], dtype=torch.uint8))
        self.schedule.skip = int(arrays["resume.skip"])
        for event in events:
            if int(event["epoch"]) <= epoch:
                self.records[int(event["epoch"])] = event
        self.previous = self.records[epoch]
        self.next_epoch = self.previous["schedule"]["next"]
        self.epoch = epoch + 1
        self.epochs_done = epoch
        if all(key in curves and len(curves[key]) == len(curves["epoch"]) for key in self.curves):
            keep = np.asarray(curves["epoch"]) <= epoch
            self.curves = {key: [float(v) for v in np.asarray(curves[key])[keep]] for key in self.curves}

    def run(self, stop: StopFlag | None, pause: StopFlag | None = None) -> str:
        """Train and measure until done or stopped; returns the final status. Idles while ``pause`` is set."""
        cfg, sched = self.cfg, self.schedule
        keep = sched.keeps_skipped_weights
        kept: dict[int, dict[str, torch.Tensor]] = {}
        previous, next_epoch, epoch = self.previous, self.next_epoch, self.epoch
        if keep and previous is not None:
            kept[previous["epoch"]] = _cpu_state(self.model)
        while next_epoch is not None:
            self.wait_while_paused(stop, pause)
            if stop is not None and stop.is_set():
                return "stopped"
            if epoch > 0:
                with torch_threads(cfg.train.threads or 1):  # one thread trains small nets fastest
                    train_loss, train_acc = self.train_epoch()
                test_loss, test_acc = _evaluate(self.model, self.prep.x_test, self.prep.y_test)
                self.epochs_done = epoch
                for key, value in zip(self.curves, (epoch, train_loss, train_acc, test_loss, test_acc)):
                    self.curves[key].append(value)
                self.emit({"type": "epoch", "epoch": epoch, "epochs": cfg.train.epochs, "train_loss": train_loss,
                           "train_acc": train_acc, "test_loss": _finite(test_loss), "test_acc": _finite(test_acc)})
            if keep:
                kept[epoch] = _cpu_state(self.model)
            if epoch == next_epoch:
                rec = self.measure(self.model, epoch)
                distance, last_gap = None, None
                if previous is not None:
                    if keep:
                        extra, last_gap, distance = self.refine(previous, rec, kept)
                        for mid in extra:
                            self.record(mid, {k: v.cpu().numpy() for k, v in kept[mid["epoch"]].items()})
                    else:
                        distance = plane_distance(self.point(previous), self.point(rec))
                next_epoch, decision = sched.decide(epoch, distance, last_gap)
                rec["schedule"] = {**decision, "next": next_epoch}
                self.record(rec, {**_weights(self.model), **self.resume_state(), "resume.epoch": np.asarray(epoch)})
                self.write_arrays(force=next_epoch is None)
                self.log.info("epoch %d measured (%s); next %s", epoch, decision["decision"], next_epoch)
                previous = rec
                kept.clear()
                if keep:
                    kept[epoch] = _cpu_state(self.model)
            epoch += 1
        return "done"


def summarize(engine: Engine, status: str, wall_s: float, error: str | None) -> dict[str, Any]:
    """Per plane and layer: final and peak I(X;T) (with its epoch), final I(T;Y), compression."""
    records = [engine.records[e] for e in sorted(engine.records)]
    last = records[-1] if records else {}
    layers = engine.model.layer_names
    planes: dict[str, Any] = {}
    for name in engine.planes:
        if not records:
            break
        ixt = np.asarray([r["planes"][name]["ixt"] for r in records])
        ity = np.asarray([r["planes"][name]["ity"] for r in records])
        epochs = np.asarray([r["epoch"] for r in records])
        peak = ixt.argmax(axis=0)
        planes[name] = [
            {"layer": layers[i], "final_ixt": float(ixt[-1, i]), "final_ity": float(ity[-1, i]),
             "peak_ixt": float(ixt[peak[i], i]), "peak_epoch": int(epochs[peak[i]]),
             "compression": float(ixt[peak[i], i] - ixt[-1, i])}
            for i in range(len(layers))
        ]
    return {
        "run_dir": str(engine.store.path), "status": status, "error": error,
        "epochs_done": engine.epochs_done, "epochs_total": engine.cfg.train.epochs,
        "measured_epochs": len(records), "wall_seconds": round(wall_s, 3),
        "epochs_per_second": round(engine.epochs_done / wall_s, 2) if wall_s > 0 else None,
        "last_measured_epoch": last.get("epoch"),
        "train_acc": last.get("train_acc"), "test_acc": last.get("test_acc"),
        "train_loss": last.get("train_loss"), "test_loss": last.get("test_loss"),
        "device": str(engine.prep.device), "layers": layers, "planes": planes,
    }


def _versions() -> dict[str, str]:
    return {"ibtui": ibtui.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def execute(cfg: Config, on_event: EventSink | None = None, stop: StopFlag | None = None,
            runs_dir: str | Path | None = None, pause: StopFlag | None = None,
            prepared: Prepared | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end (or until ``stop`` is set / Ctrl+C). Returns the summary dict.

    ``stop`` and ``pause`` are anything with ``is_set()`` (threading or multiprocessing Events).
    ``prepared``: the result of ``prepare(cfg)`` when the caller validated the input first.

    Raises UserError for bad input before anything is written. Once the run directory exists
    every outcome is recorded in meta.json: done, stopped (stop flag or KeyboardInterrupt,
    measured epochs kept) or failed (divergence or an unexpected error, with the reason).
    """
    prep = prepared or prepare(cfg)
    meta = {
        "preset": cfg.preset, "description": cfg.description, "versions": _versions(),
        "device": str(prep.device), "seed": cfg.train.seed, "dataset": prep.dataset.name,
        "dataset_description": prep.dataset.description, "layers": prep.model.layer_names,
        "planes": all_planes(cfg), "epochs_total": cfg.train.epochs, "epochs_done": 0,
        "n_mi": prep.mi_set.n, "h_x": prep.mi_set.h_x, "h_y": prep.mi_set.h_y,
        "n_train": len(prep.y_train), "n_test": len(prep.y_test), "host": platform.node(), "pid": os.getpid(),
        "argv": sys.argv,
    }
    store = RunStore.create(Path(runs_dir or cfg.store.runs_dir), cfg.preset, cfg.to_toml(), meta)
    return _drive(prep, store, on_event, stop, pause, f"started on {prep.device}: {cfg.description}")


def resume(run_dir: str | Path, on_event: EventSink | None = None, stop: StopFlag | None = None,
           pause: StopFlag | None = None) -> dict[str, Any]:
    """Continue a stopped, failed or killed run from its last complete checkpoint, in place.

    On CPU the epochs after the checkpoint are the same as those of an uninterrupted run with
    the same seed (weights, optimiser state and the batch-order RNG are restored). Raises
    UserError when the directory is not a resumable run.
    """
    path = Path(run_dir)
    meta = read_meta(path)
    status = meta.get("status")
    if status == "done":
        raise UserError(f"{path} is already done; nothing to resume")
    if status == "running" and meta.get("host") == platform.node() and _pid_alive(meta.get("pid")):
        raise UserError(f"{path} is still being written by process {meta.get('pid')}")
    cfg = config_from_dict(read_toml(run_file(path, CONFIG)), source=str(path / CONFIG))
    prep = prepare(cfg)
    events = read_events(path)
    point = None
    for event in reversed(events):
        try:
            arrays = read_npz(checkpoint_path(path, int(event["epoch"])))
        except (OSError, ValueError, KeyError, TypeError, UserError, zipfile.BadZipFile):
            continue
        if "resume.epoch" in arrays and int(arrays["resume.epoch"]) == int(event["epoch"]):
            point = arrays
            break
    if point is None:
        raise UserError(f"{path} has no complete checkpoint to resume from; start it again with `ibtui run`")
    try:
        curves = read_npz(run_file(path, CURVES))
    except (OSError, ValueError, UserError, zipfile.BadZipFile):
        curves = {}
    store = RunStore.open(path)
    engine_events = [e for e in events if isinstance(e.get("epoch"), int) and isinstance(e.get("planes"), dict)]
    epoch = int(point["resume.epoch"])
    store.write_meta(status="running", error=None, pid=os.getpid(), resumed_from=epoch)
    return _drive(prep, store, on_event, stop, pause, f"resumed after epoch {epoch}",
                  lambda engine: engine.restore(point, engine_events, curves))


class _QuietFileHandler(logging.FileHandler):
    """worker.log is best effort: a full disk must not print logging tracebacks on the terminal."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drive(prep: Prepared, store: RunStore, on_event: EventSink | None, stop: StopFlag | None,
           pause: StopFlag | None, what: str, setup: Callable[[Engine], None] | None = None) -> dict[str, Any]:
    """Run an engine on an open store, recording the outcome in meta.json whatever happens."""
    emit: EventSink = on_event or (lambda event: None)
    log = logging.getLogger(f"ibtui.run.{store.path.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = _QuietFileHandler(store.path / LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.info("run %s %s", store.path.name, what)
    engine = Engine(prep, store, emit, log)
    started = time.perf_counter()
    status, error = "failed", None
    try:
        if setup is not None:
            setup(engine)
        emit({"type": "start", "run_dir": str(store.path), "meta": store.meta})
        status = engine.run(stop, pause)
    except KeyboardInterrupt:
        status = "stopped"
    except Diverged as exc:
        status, error = "failed", f"diverged: {exc}"
    except Exception as exc:  # recorded in meta.json and worker.log, reported in the summary
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("run failed:\n%s", traceback.format_exc())
    finally:
        wall = time.perf_counter() - started
        _ignore_sigint()  # a second Ctrl+C must not interrupt the final writes
        try:
            engine.write_arrays(force=True)
        except OSError as exc:  # disk full, read-only...: events.jsonl still holds every measured epoch
            status, error = "failed", error or f"cannot write arrays: {exc}"
            log.error("final arrays not written: %s", exc)
        try:
            store.write_meta(status=status, error=error, epochs_done=engine.epochs_done, wall_seconds=round(wall, 3))
        except OSError as exc:
            status, error = "failed", error or f"cannot write meta.json: {exc}"
            log.error("final meta.json not written: %s", exc)
        store.close()
        log.info("run %s ended: %s%s", store.path.name, status, f" ({error})" if error else "")
        log.removeHandler(handler)
        handler.close()
        _restore_sigint()
    summary = summarize(engine, status, wall, error)
    emit({"type": "end", "status": status, "error": error, "summary": summary})
    return summary


_saved_sigint: list[Any] = []


def _ignore_sigint() -> None:
    if threading.current_thread() is threading.main_thread():
        _saved_sigint.append(signal.signal(signal.SIGINT, signal.SIG_IGN))


def _restore_sigint() -> None:
    if _saved_sigint and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _saved_sigint.pop())
