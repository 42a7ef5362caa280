"""The training-and-measurement loop of one run (``Engine``): train an epoch, measure on
schedule, checkpoint, append the event; and its state for resuming (``resume_state``/``restore``).
The lifecycle around it (directories, meta.json, signals, summaries) is ``ibtui.engine.runner``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable, Protocol

import numpy as np
import torch

from ibtui.config import all_planes, pool_suffix
from ibtui.engine import signals
from ibtui.engine.measure import (check_finite, measure_planes, measurement_generator, member_workers, pooled_planes,
                                  stack_members, torch_threads)
from ibtui.engine.model import Ensemble, checkpoint_name
from ibtui.engine.prepare import Prepared
from ibtui.engine.schedule import Schedule, plane_distance
from ibtui.engine.training import Trainer, evaluate
from ibtui.errors import UserError
from ibtui.rundir.records import MeasureRecord, PlaneValues
from ibtui.rundir.store import CURVES, PLANES, RunStore

EventSink = Callable[[dict[str, Any]], None]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


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

    def __init__(self, prep: Prepared, store: RunStore | None, on_event: EventSink, log: logging.Logger) -> None:
        """``store``: the open run directory (None until the runner attaches one; built first, an
        engine writes nothing)."""
        self.prep, self.cfg, self.emit, self.log = prep, prep.cfg, on_event, log
        self.store: RunStore = store  # type: ignore[assignment]
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
            layers = range(len(self.model.weights))
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
        signals.pause_point("measure")
        threads = cfg.train.threads or torch.get_num_threads()
        # 0 threads: all cores (the pairwise KDE work scales): members side by side (thread_map), or
        # for one member torch's own threads inside each estimator
        with torch_threads(cfg.train.threads):
            results = measure_planes(model, p.x_all, p.mi_idx, p.mi_sets, self.estimators, epoch,
                                     cfg.model.noise_draws, self.member_workers(threads))
        planes = {name: value for result in results for name, value in result.items()}
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
        members = None
        if model.size > 1:
            members = {"seed": model.seeds, **{key: [_finite(float(v)) for v in values] for key, values in (
                ("train_loss", train_loss), ("train_acc", train_acc), ("test_loss", test_loss),
                ("test_acc", test_acc))}}
        record = MeasureRecord(epoch, planes, _mean(train_loss), _mean(train_acc), _mean(test_loss), _mean(test_acc),
                               _mean(float_test_acc) if model.quantize_bits else None, members,
                               mi_seconds=round(time.perf_counter() - t0, 6))
        return record.to_json()  # the typed record's JSON: what events.jsonl and the app receive

    def branched_planes(self, trainer: Trainer, epoch: int) -> dict[str, PlaneValues]:
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
        return {name + self.pool_suffix: stack_members([member[e][name] for member in per_member])
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
        and every epoch before it its curve row), then meta and the UI. A stop signal waits for
        the end of it (``signals.deferred``)."""
        with signals.deferred():
            self.records[rec["epoch"]] = rec
            self.store.sync_curves()
            if self.cfg.store.checkpoints:
                self.store.write_checkpoint(rec["epoch"], weights)
                signals.pause_point("checkpoint")
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
        measure_seconds: float | None = None  # the last measurement's cost, sent with the next epoch (ETA)
        while next_epoch is not None:
            self.wait_while_paused(stop, pause)
            if stop is not None and stop.is_set():
                return "stopped"
            started = time.perf_counter()
            if epoch > 0:
                with torch_threads(cfg.train.threads or training_threads(self.model.size)):
                    losses, accs = self.trainer.epoch(epoch)
                    test_losses, test_accs = evaluate(self.model, self.prep.x_all, self.prep.y_all, self.prep.test_idx)
                signals.pause_point("epoch")
                train_loss, train_acc = float(losses.mean()), float(accs.mean())
                test_loss, test_acc = float(test_losses.mean()), float(test_accs.mean())
                self.epochs_done = epoch
                values = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                          "test_acc": test_acc}
                event = {"type": "epoch", "epoch": epoch, "epochs": cfg.train.epochs, "train_loss": train_loss,
                         "train_acc": train_acc, "test_loss": _finite(test_loss), "test_acc": _finite(test_acc),
                         "seconds": round(time.perf_counter() - started, 6)}  # training time (ETA)
                if measure_seconds is not None:
                    event["measure_seconds"], measure_seconds = measure_seconds, None
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
                measured_at = time.perf_counter()
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
                measure_seconds = round(time.perf_counter() - measured_at, 6)  # estimators, records, files
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
        for key in ("ixt", "ity"):  # (0, 0) before the first measured epoch
            arrays[f"{name}.{key}"] = np.asarray([v[key] for v in values], dtype=np.float64).reshape(n, -1 if n else 0)
            if n and members > 1 and all(f"{key}_seeds" in v for v in values):
                arrays[f"{name}.{key}_seeds"] = np.asarray(  # (epochs, seeds, layers)
                    [v[f"{key}_seeds"] for v in values], dtype=np.float64).reshape(n, members, -1)
        if n and all("h_t_x" in v for v in values):
            arrays[f"{name}.h_t_x"] = np.asarray([v["h_t_x"] for v in values], dtype=np.float64).reshape(n, -1)
            arrays[f"{name}.h_t_x_cap"] = np.asarray([v["h_t_x_cap"] for v in values], dtype=np.float64)
            arrays[f"{name}.saturated"] = np.asarray([v["saturated"] for v in values], dtype=bool).reshape(n, -1)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        arrays[key] = np.asarray([np.nan if r[key] is None else r[key] for r in records], dtype=np.float64)
    return arrays


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
