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

import copy
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

import ibtui
from ibtui.config import Config, all_planes, pool_suffix
from ibtui.engine.data import Dataset, load_dataset
from ibtui.engine.measure import (Diverged, check_finite, measure_planes, measurement_generator, member_workers,
                                  pooled_planes, stack_members, torch_threads)
from ibtui.engine.model import Ensemble, checkpoint_name
from ibtui.engine.training import Trainer, evaluate
from ibtui.engine.phases import WINDOW, snr, transition_epochs
from ibtui.engine.schedule import Schedule, plane_distance
from ibtui.engine.summary import compression_table
from ibtui.rundir.reader import Run, load_run, writer_alive
from ibtui.rundir.store import CURVES, PLANES, RunStore, read_curves_log
from ibtui.errors import UserError
from ibtui.estimators import MISet

EventSink = Callable[[dict[str, Any]], None]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


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


@dataclass
class Prepared:
    """Everything validated and built before a run directory exists.

    The data stay once on the device (``x_all``, ``y_all``); each ensemble member s has its own
    split, as index rows ``train_idx[s]``, ``test_idx[s]`` and ``mi_idx[s]`` into them (the
    same rows for every member when the split does not depend on the seed).
    """

    cfg: Config
    device: torch.device
    dataset: Dataset
    x_all: torch.Tensor
    y_all: torch.Tensor
    train_idx: torch.Tensor  # (S, N_train) int64
    test_idx: torch.Tensor  # (S, N_test)
    mi_idx: torch.Tensor  # (S, N_mi)
    mi_sets: list[MISet]  # one per member
    model: Ensemble

    @property
    def mi_set(self) -> MISet:
        """The first member's MI set (every member's has the same size, H(X) and H(Y) for the presets)."""
        return self.mi_sets[0]


def split_indices(dataset: Dataset, train_fraction: float, shuffle: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices: the dataset's own test split if it has one, else a (shuffled) fraction."""
    n = len(dataset.y)
    if dataset.is_test is not None:
        return np.flatnonzero(~dataset.is_test), np.flatnonzero(dataset.is_test)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    n_train = max(1, min(n, int(round(train_fraction * n))))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def member_indices(cfg: Config, dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, MI-set) row indices of the member with ``seed``. Raises UserError."""
    train_idx, test_idx = split_indices(dataset, cfg.data.train_fraction, cfg.data.shuffle, seed)
    mi_idx = {"all": np.arange(len(dataset.y)), "train": train_idx, "test": test_idx}[cfg.data.mi_set]
    if len(mi_idx) == 0:
        raise UserError(f"data.mi_set = '{cfg.data.mi_set}' selects no samples (train_fraction = {cfg.data.train_fraction})")
    if cfg.data.mi_max_samples and len(mi_idx) > cfg.data.mi_max_samples:
        rng = np.random.default_rng(seed + 1)
        mi_idx = np.sort(rng.choice(mi_idx, cfg.data.mi_max_samples, replace=False))
    return train_idx, test_idx, mi_idx


def member_seeds(cfg: Config) -> list[int]:
    """The ensemble's seeds: train.seed, train.seed + 1, ..., one per member."""
    return [cfg.train.seed + i for i in range(cfg.train.seeds)]


def prepare(cfg: Config) -> Prepared:
    """Resolve the device, load and split the data, build the model. Raises UserError."""
    device = resolve_device(cfg.train.device)
    dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir or None)
    seeds = member_seeds(cfg)
    splits = [member_indices(cfg, dataset, seed) for seed in seeds]

    def rows(part: int) -> torch.Tensor:
        return torch.as_tensor(np.stack([split[part] for split in splits]), dtype=torch.int64, device=device)

    mi_sets, previous = [], None
    for split in splits:
        same = previous is not None and np.array_equal(previous[0], split[2])
        mi_sets.append(previous[1] if same else
                       MISet.from_arrays(dataset.x[split[2]], dataset.y[split[2]], device=device))
        previous = (split[2], mi_sets[-1])
    model = Ensemble(dataset.x.shape[1], cfg.model.widths, dataset.n_classes, cfg.model.activation,
                     cfg.model.init, seeds, cfg.model.quantize_bits, cfg.model.levels_range(), cfg.model.noise_std)
    return Prepared(
        cfg=cfg, device=device, dataset=dataset,
        x_all=torch.as_tensor(dataset.x, dtype=torch.float32, device=device),
        y_all=torch.as_tensor(dataset.y, dtype=torch.int64, device=device),
        train_idx=rows(0), test_idx=rows(1), mi_idx=rows(2), mi_sets=mi_sets, model=model.to(device),
    )


def _weights(model: Ensemble) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_arrays().items()}


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights in host memory (delta_exact keeps one per skipped epoch)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def saved_arrays(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``_cpu_state`` copy under the checkpoint names (``Ensemble.state_arrays``)."""
    return {checkpoint_name(k): v for k, v in state.items()}


def branch_seed(seed: int, epoch: int, child: int) -> int:
    """Batch-order seed of child ``child`` branched from the member with ``seed`` at ``epoch``."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(child), 0xB4A]).generate_state(1, np.uint64)[0]
               & (2**63 - 1))


ENSEMBLE_THREADED = 8
"""Ensembles of at least this many members train on all cores (see ``training_threads``)."""


def training_threads(members: int) -> int:
    """Automatic thread count for training: one for up to ``ENSEMBLE_THREADED`` − 1 members
    (small networks train fastest on one thread and never oversubscribe a shared machine),
    else all of torch's threads (0) for the batched matrix products of a larger ensemble."""
    return 1 if members < ENSEMBLE_THREADED else 0


def _finite(value: float) -> float | None:
    """JSON-safe number: None for NaN/inf."""
    return value if math.isfinite(value) else None


def _mean(values: np.ndarray) -> float | None:
    """JSON-safe mean over members: None when any is NaN/inf (e.g. an empty test set)."""
    return _finite(float(np.mean(values)))


class Engine:
    """One run: owns the model, trainer, schedule and store. Use :func:`execute`."""

    def __init__(self, prep: Prepared, store: RunStore, on_event: EventSink, log: logging.Logger) -> None:
        self.prep, self.cfg, self.store, self.emit, self.log = prep, prep.cfg, store, on_event, log
        self.model = prep.model
        t = self.cfg.train
        self.trainer = Trainer(self.model, prep.x_all, prep.y_all, prep.train_idx, t, prep.model.seeds)
        self.schedule = Schedule(self.cfg.schedule, t.epochs)
        self.planes = all_planes(self.cfg)
        self.estimators = list(self.cfg.estimators.values())
        self.distance_plane = self.cfg.schedule.estimator or self.planes[0]
        self.records: dict[int, dict[str, Any]] = {}  # measured epoch → event
        curve_keys = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
        if t.gradient_stats:
            layers = range(len(self.cfg.model.widths) + 1)
            curve_keys += [f"grad_mean.{i}" for i in layers] + [f"grad_std.{i}" for i in layers]
        self.curves: dict[str, list[float]] = {k: [] for k in curve_keys}
        self.pool_suffix = pool_suffix(self.cfg)  # "~sgd" when as-if-random is on
        self.epochs_done = 0
        self.previous: dict[str, Any] | None = None  # loop state (set by restore() when resuming)
        self.next_epoch: int | None = self.schedule.first()
        self.epoch = 0
        self._scratch: Ensemble | None = None
        self._last_array_write = 0.0

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.trainer.opt

    # ------------------------------------------------------------------ measurement
    def member_workers(self, threads: int) -> int:
        """Members estimated side by side (``measure.member_workers``)."""
        return member_workers(self.model, self.estimators, threads)

    def measure(self, model: Ensemble, epoch: int, trainer: Trainer | None = None) -> dict[str, Any]:
        """Every estimator's plane for every member on its MI set (``measure_planes``), the
        as-if-random planes when ``trainer`` (the run's) is given, plus loss/accuracy.

        ``planes[name]["ixt"/"ity"]`` are the means over members (per layer, bits); with
        more than one member ``"ixt_seeds"``/``"ity_seeds"`` hold each member's values (S × L)
        and ``"seeds"`` each member's loss and accuracy; pooled planes add H(T|X) and its cap.
        """
        p, cfg = self.prep, self.cfg
        t0 = time.perf_counter()
        threads = cfg.train.threads or torch.get_num_threads()
        # 0 threads: all cores (the pairwise KDE work scales): members side by side (thread_map), or
        # for one member torch's own threads inside each estimator
        with torch_threads(cfg.train.threads):
            results = measure_planes(model, p.x_all, p.mi_idx, p.mi_sets, self.estimators, epoch,
                                     cfg.model.noise_draws, self.member_workers(threads))
        planes = {name: value.to_json() for result in results for name, value in result.items()}
        if self.pool_suffix and trainer is not None:
            planes.update(self.branched_planes(trainer, epoch))
        # a noisy network's evaluation noise: the measurement's own, so measuring leaves training unchanged
        noise = measurement_generator(model.seeds[0], epoch, p.device, stream=1) if model.noisy else None
        train_loss, train_acc = evaluate(model, p.x_all, p.y_all, p.train_idx, noise)
        test_loss, test_acc = evaluate(model, p.x_all, p.y_all, p.test_idx, noise)
        if model.quantize_bits:  # the same weights with float activations, for comparison
            model.quantized = False
            try:
                float_test_acc = evaluate(model, p.x_all, p.y_all, p.test_idx, noise)[1]
            finally:
                model.quantized = True
        record: dict[str, Any] = {
            "type": "measure", "epoch": epoch,
            "train_loss": _mean(train_loss), "train_acc": _mean(train_acc),
            "test_loss": _mean(test_loss), "test_acc": _mean(test_acc),
            "planes": planes, "mi_seconds": round(time.perf_counter() - t0, 6),
        }
        if model.quantize_bits:
            record["float_test_acc"] = _mean(float_test_acc)
        if model.size > 1:
            record["seeds"] = {"seed": model.seeds, **{key: [_finite(float(v)) for v in values] for key, values in (
                ("train_loss", train_loss), ("train_acc", train_acc), ("test_loss", test_loss),
                ("test_acc", test_acc))}}
        return record

    def branched_planes(self, trainer: Trainer, epoch: int) -> dict[str, dict[str, Any]]:
        """As if random (``[as_if_random] pool = "sgd"``): ``children`` copies of every member,
        branched from its state at ``epoch`` (weights and optimiser state: aligned units), each
        trained ``window`` more epochs with its own batch order; each input's activations in the
        children form its distribution of T. Pooled plug-in planes ``<plane>~sgd`` with H(T|X)
        and its cap log2(children)."""
        p, a = self.prep, self.cfg.as_if_random
        seeds = [branch_seed(seed, epoch, k) for seed in self.model.seeds for k in range(a.children)]
        child = trainer.branch(a.children, seeds)
        with torch_threads(self.cfg.train.threads or training_threads(child.model.size)):
            for step in range(a.window):
                child.epoch(epoch + step + 1)
        poolers = [est for est in self.estimators if est.pools]
        per_member = []
        with torch.no_grad(), torch_threads(self.cfg.train.threads):
            child.model.eval()
            for j in range(self.model.size):
                members = slice(j * a.children, (j + 1) * a.children)
                layers = child.model.forward_layers(p.x_all[p.mi_idx[j]], members)  # (K, N, d) each
                check_finite(layers, child.model.layer_names, child.model.seeds[members], epoch)
                per_member.append(pooled_planes(layers, p.mi_sets[j], a.children, poolers))
        return {name + self.pool_suffix: stack_members([member[e][name] for member in per_member]).to_json()
                for e in range(len(poolers)) for name in per_member[0][e]}

    def scratch(self, checkpoint: dict[str, torch.Tensor]) -> Ensemble:
        """A second copy of the network (made once) holding the weights of ``checkpoint`` arrays."""
        if self._scratch is None:
            self._scratch = copy.deepcopy(self.model)
        self._scratch.load_state_arrays(checkpoint)
        return self._scratch

    def measure_saved(self, weights: dict[str, torch.Tensor], epoch: int) -> dict[str, Any]:
        """Measure a skipped epoch from its kept weights (delta_exact bisection)."""
        return self.measure(self.scratch(saved_arrays(weights)), epoch)

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
        """Curves made durable, the checkpoint, then the event line (so every event has its weights
        and every epoch before it its curve row), then meta and the UI."""
        self.records[rec["epoch"]] = rec
        self.store.sync_curves()
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
        self.store.write_arrays(PLANES, plane_arrays([self.records[e] for e in sorted(self.records)], self.planes,
                                                      self.model.size))
        self.store.write_arrays(CURVES, {k: np.asarray(v) for k, v in self.curves.items()})

    # ------------------------------------------------------------------ main loop
    def wait_while_paused(self, stop: StopFlag | None, pause: StopFlag | None) -> None:
        while pause is not None and pause.is_set() and not (stop is not None and stop.is_set()):
            time.sleep(0.05)

    # ------------------------------------------------------------------ resume
    def resume_state(self) -> dict[str, np.ndarray]:
        """What a checkpoint needs beyond the weights to continue exactly: optimiser, batch RNG, skip."""
        out = {**self.trainer.state_arrays(), "resume.skip": np.asarray(self.schedule.skip)}
        if self.model.noisy:
            out["resume.noise_rng"] = self.model.generator(self.prep.device).get_state().cpu().numpy()
        return out

    def restore(self, arrays: dict[str, np.ndarray], events: list[dict[str, Any]], curves: dict[str, Any],
                complete_curves: bool = True) -> None:
        """Continue after the checkpointed epoch of ``arrays`` (see :func:`resume`). Raises UserError
        when the checkpoint does not fit this run."""
        epoch = int(arrays["resume.epoch"])
        weights = {k: torch.as_tensor(v) for k, v in arrays.items() if not k.startswith("resume.")}
        try:
            self.model.load_state_arrays(weights)
            self.trainer.load_state_arrays(arrays)
            if self.model.noisy and "resume.noise_rng" in arrays:
                self.model.generator(self.prep.device).set_state(
                    torch.as_tensor(np.asarray(arrays["resume.noise_rng"]), dtype=torch.uint8))
            skip = int(np.asarray(arrays["resume.skip"]).reshape(-1)[0])
        except (ValueError, TypeError, RuntimeError, IndexError, KeyError) as exc:
            raise UserError(f"the checkpoint of epoch {epoch} does not fit this run ({exc})") from None
        if not 1 <= skip <= max(self.cfg.schedule.max_skip, self.cfg.schedule.initial_skip):
            raise UserError(f"the checkpoint of epoch {epoch} holds a skip of {skip} epochs, outside this run's "
                            f"schedule (1 to {self.cfg.schedule.max_skip})")
        self.schedule.skip = skip
        layers = len(self.model.layer_names)
        for event in events:
            at = event.get("epoch")
            if isinstance(at, int) and not isinstance(at, bool) and 0 <= at <= epoch:
                if not _record_fits(event, self.planes, layers):
                    raise UserError(f"the events.jsonl line of epoch {at} does not hold this run's planes "
                                    f"({', '.join(self.planes)}, {layers} layers each)")
                self.records[at] = event
        if epoch not in self.records:
            raise UserError(f"events.jsonl has no line for the checkpointed epoch {epoch}")
        self.previous = self.records[epoch]
        # the next epoch follows from the schedule and the checkpoint, never from the file
        self.next_epoch = self.schedule.resume_next(epoch)
        self.epoch = epoch + 1
        self.epochs_done = epoch
        self.curves = restored_curves(curves, list(self.curves), epoch, strict=complete_curves)

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
                with torch_threads(cfg.train.threads or training_threads(self.model.size)):
                    losses, accs = self.trainer.epoch(epoch)
                    test_losses, test_accs = evaluate(self.model, self.prep.x_all, self.prep.y_all, self.prep.test_idx)
                train_loss, train_acc = float(losses.mean()), float(accs.mean())
                test_loss, test_acc = float(test_losses.mean()), float(test_accs.mean())
                self.epochs_done = epoch
                values = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                          "test_acc": test_acc}
                event = {"type": "epoch", "epoch": epoch, "epochs": cfg.train.epochs, "train_loss": train_loss,
                         "train_acc": train_acc, "test_loss": _finite(test_loss), "test_acc": _finite(test_acc)}
                if cfg.train.gradient_stats:
                    norms = self.trainer.gradient_norms
                    for layer, (mean_norm, std_norm) in enumerate(norms):
                        values[f"grad_mean.{layer}"], values[f"grad_std.{layer}"] = mean_norm, std_norm
                    event["grad_mean"] = [_finite(m) for m, _ in norms]
                    event["grad_std"] = [_finite(v) for _, v in norms]
                for key in self.curves:
                    self.curves[key].append(values[key])
                self.store.append_curve(values)
                self.emit(event)
            if keep:
                kept[epoch] = _cpu_state(self.model)
            if epoch == next_epoch:
                rec = self.measure(self.model, epoch, self.trainer)
                distance, last_gap = None, None
                if previous is not None:
                    if keep:
                        extra, last_gap, distance = self.refine(previous, rec, kept)
                        for mid in extra:
                            self.record(mid, {k: v.numpy() for k, v in saved_arrays(kept[mid["epoch"]]).items()})
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


def restored_curves(curves: dict[str, Any], keys: list[str], epoch: int, strict: bool = True) -> dict[str, list[float]]:
    """The per-epoch curves of epochs 1..``epoch`` from a run's saved columns: every key this run
    records, one value per epoch. ``strict`` (``curves.jsonl``, complete by construction): a missing
    epoch raises UserError, so a resumed run never drops part of its curves silently. Otherwise (the
    ``curves.npz`` of a run of an older version, which could lag behind its checkpoints) the epochs
    that are there are kept."""
    if epoch == 0:
        return {key: [] for key in keys}
    try:
        at = [int(v) for v in np.asarray(curves.get("epoch", []), dtype=np.float64)]
    except (TypeError, ValueError):
        at = []
    position = {e: i for i, e in enumerate(at)}
    missing = [e for e in range(1, epoch + 1) if e not in position]
    absent = [key for key in keys if key not in curves or len(curves[key]) != len(at)]
    if (missing or absent) and not strict:
        if absent:
            return {key: [] for key in keys}
        rows = [position[e] for e in range(1, epoch + 1) if e in position]
        return {key: [float(np.asarray(curves[key], dtype=np.float64)[i]) for i in rows] for key in keys}
    if missing or absent:
        raise UserError(f"the saved curves lack {'epochs ' + str(missing[:3]) if missing else 'the columns ' + str(absent[:3])}"
                        f" before the checkpoint of epoch {epoch}; the run cannot be resumed exactly")
    rows = [position[e] for e in range(1, epoch + 1)]
    return {key: [float(np.asarray(curves[key], dtype=np.float64)[i]) for i in rows] for key in keys}


def plane_arrays(records: list[dict[str, Any]], planes: list[str], members: int) -> dict[str, np.ndarray]:
    """planes.npz from measure records in epoch order: ``epochs`` (E,); per plane ``.ixt``/``.ity``
    (E, L) (member means), ``.ixt_seeds``/``.ity_seeds`` (E, S, L) for ensembles, and for pooled
    planes ``.h_t_x`` (E, L), ``.h_t_x_cap`` (E,) and ``.saturated`` (E, L); the losses and accuracies."""
    arrays: dict[str, np.ndarray] = {"epochs": np.asarray([r["epoch"] for r in records], dtype=np.int64)}
    n = len(records)
    for name in planes:
        values = [r["planes"][name] for r in records]
        for key in ("ixt", "ity"):
            arrays[f"{name}.{key}"] = np.asarray([v[key] for v in values], dtype=np.float64).reshape(n, -1)
            if members > 1 and all(f"{key}_seeds" in v for v in values):
                arrays[f"{name}.{key}_seeds"] = np.asarray(  # (epochs, seeds, layers)
                    [v[f"{key}_seeds"] for v in values], dtype=np.float64).reshape(n, members, -1)
        if n and all("h_t_x" in v for v in values):
            arrays[f"{name}.h_t_x"] = np.asarray([v["h_t_x"] for v in values], dtype=np.float64).reshape(n, -1)
            arrays[f"{name}.h_t_x_cap"] = np.asarray([v["h_t_x_cap"] for v in values], dtype=np.float64)
            arrays[f"{name}.saturated"] = np.asarray([v["saturated"] for v in values], dtype=bool).reshape(n, -1)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        arrays[key] = np.asarray([np.nan if r[key] is None else r[key] for r in records], dtype=np.float64)
    return arrays


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
            prepared: Prepared | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end (or until ``stop`` is set / Ctrl+C). Returns the summary dict.

    ``stop`` and ``pause`` are anything with ``is_set()`` (threading or multiprocessing Events).
    ``prepared``: the result of ``prepare(cfg)`` when the caller validated the input first.
    ``run_name``: the run directory's exact name (default ``<preset>-<UTC time>``).

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
        "n_train": prep.train_idx.shape[1], "n_test": prep.test_idx.shape[1], "host": platform.node(), "pid": os.getpid(),
        "argv": sys.argv,
    }
    store = RunStore.create(Path(runs_dir or cfg.store.runs_dir), cfg.preset, cfg.to_toml(), meta, run_name)
    return _drive(prep, store, on_event, stop, pause, f"started on {prep.device}: {cfg.description}")


def _record_fits(event: dict[str, Any], planes: list[str], layers: int) -> bool:
    """A measured-epoch event from the run's own file has every plane with L numbers (or None) per side."""
    values = event.get("planes")
    if not isinstance(values, dict):
        return False
    for name in planes:
        plane = values.get(name)
        if not isinstance(plane, dict):
            return False
        for key in ("ixt", "ity"):
            row = plane.get(key)
            if not (isinstance(row, list) and len(row) == layers
                    and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in row)):
                return False
    return True


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
    written by another process is refused.
    """
    run = load_run(run_dir)
    path = run.path
    if run.meta["status"] == "done":
        raise UserError(f"{path} is already done; nothing to resume")
    if writer_alive(path, run.meta) and run.meta.get("pid") != os.getpid():
        raise UserError(f"{path} is still being written by another process")
    cfg = run.settings()
    prep = prepare(cfg)
    point = last_checkpoint(run, cfg.train.epochs)
    if point is None:
        raise UserError(f"{path} has no complete checkpoint to resume from; start it again with `ibtui run`")
    epoch = int(point["resume.epoch"])
    curves: dict[str, Any] | None = read_curves_log(path)
    complete = curves is not None
    if curves is None:  # a run of an older version: its curves.npz
        curves = run.curves
    engine = Engine(prep, RunStore(path), lambda event: None, logging.getLogger("ibtui.resume"))
    # UserError when anything does not fit; nothing is written before this returns
    engine.restore(point, [r.to_json() for r in run.records], curves, complete)
    store = RunStore.open(path, epoch)
    engine.store = store
    try:
        store.write_meta(status="running", error=None, pid=os.getpid(), host=platform.node(), resumed_from=epoch)
    except OSError as exc:
        store.close()
        raise UserError(f"cannot write {path / 'meta.json'}: {exc.strerror or exc}") from None
    return _drive(prep, store, on_event, stop, pause, f"resumed after epoch {epoch}", engine)


class _QuietHandler(logging.StreamHandler):
    """worker.log is best effort: a full disk must not print logging tracebacks on the terminal."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _drive(prep: Prepared, store: RunStore, on_event: EventSink | None, stop: StopFlag | None,
           pause: StopFlag | None, what: str, engine: Engine | None = None) -> dict[str, Any]:
    """Run an engine (new, or restored by ``resume``) on an open store, recording the outcome in
    meta.json whatever happens."""
    emit: EventSink = on_event or (lambda event: None)
    log = logging.getLogger(f"ibtui.run.{store.path.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = _QuietHandler(store.log_stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    started = time.perf_counter()
    status, error = "failed", None
    try:
        log.info("run %s %s", store.path.name, what)
        if engine is None:
            engine = Engine(prep, store, emit, log)
        engine.emit, engine.log = emit, log
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
            if engine is not None:
                engine.write_arrays(force=True)
        except OSError as exc:  # disk full, read-only...: events.jsonl still holds every measured epoch
            status, error = "failed", error or f"cannot write arrays: {exc}"
            log.error("final arrays not written: %s", exc)
        try:
            done = engine.epochs_done if engine is not None else store.meta.get("epochs_done", 0)
            store.write_meta(status=status, error=error, epochs_done=done, wall_seconds=round(wall, 3))
        except OSError as exc:
            status, error = "failed", error or f"cannot write meta.json: {exc}"
            log.error("final meta.json not written: %s", exc)
        log.info("run %s ended: %s%s", store.path.name, status, f" ({error})" if error else "")
        log.removeHandler(handler)
        store.close()
        _restore_sigint()
    if engine is None:  # it could not even be built: the error is in meta.json and worker.log
        raise UserError(f"the run could not start: {error}")
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
