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

import collections
import concurrent.futures
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
from typing import Any, Callable, Protocol, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

import ibtui
from ibtui.config import Config, all_planes, config_from_dict, pool_suffix, read_toml
from ibtui.engine.data import Dataset, load_dataset
from ibtui.engine.model import Ensemble, checkpoint_name
from ibtui.engine.phases import WINDOW, snr, transition_epochs
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


def _member_planes(values: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, dict[str, Any]]:
    """Per plane, from each member's (I(X;T), I(T;Y)) per layer: the means over members, plus every
    member's values (``ixt_seeds``/``ity_seeds``, S × L) when there is more than one."""
    planes: dict[str, dict[str, Any]] = {}
    for name, rows in values.items():
        ixt = np.stack([r[0] for r in rows]).astype(np.float64)
        ity = np.stack([r[1] for r in rows]).astype(np.float64)
        planes[name] = {"ixt": [float(v) for v in ixt.mean(0)], "ity": [float(v) for v in ity.mean(0)]}
        if len(rows) > 1:
            planes[name]["ixt_seeds"], planes[name]["ity_seeds"] = ixt.tolist(), ity.tolist()
    return planes


ENSEMBLE_THREADED = 8
"""Ensembles of at least this many members train on all cores (see ``Engine.training_threads``)."""

EVAL_ROWS = 2048
"""Rows per member evaluated at once (bounds memory for large sets and ensembles)."""


def _rows(prep: Prepared, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of index rows ``idx`` (S, n): (S, n, D) and (S, n)."""
    flat = idx.reshape(-1)  # index_select copies whole rows: several times faster than x_all[idx]
    return prep.x_all.index_select(0, flat).view(*idx.shape, -1), prep.y_all.index_select(0, flat).view(idx.shape)


def _predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted classes (S, B) of feature-major logits (S, C, B) (argmax over a contiguous last dim:
    many times faster than over the strided class dimension)."""
    return logits.detach().transpose(1, 2).contiguous().argmax(2)


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


T = TypeVar("T")
R = TypeVar("R")


def thread_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[fn(item) for item in items]``, run side by side in ``workers`` threads (default: torch's
    CPU thread count) each with one torch thread, when there are at least two of both; else in order
    in the calling thread. On a few cores, the estimators of ensemble members run this way (every
    core on its own cache-sized kernel blocks, no fork and join per operation) 10-30% faster than
    one after another with torch's own threads. ``fn`` must not touch process-wide state (the global RNG).
    Inside such a worker torch has one thread, so nested calls run in order."""
    workers = torch.get_num_threads() if workers is None else workers
    workers = min(workers, len(items))
    if workers < 2:
        return [fn(item) for item in items]
    before = torch.get_num_threads()
    grad = torch.is_grad_enabled()

    def call(item: T) -> R:
        with torch.set_grad_enabled(grad):  # grad mode is per thread: carry the caller's
            return fn(item)

    try:
        with concurrent.futures.ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(call, items))
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _evaluate(model: Ensemble, prep: Prepared, idx: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per member: (mean cross-entropy in nats, accuracy) on its rows ``idx`` (S, n); NaN when n = 0."""
    size, n = idx.shape
    if n == 0:
        return np.full(size, math.nan), np.full(size, math.nan)
    loss = torch.zeros(size, dtype=torch.float64, device=idx.device)
    correct = torch.zeros(size, dtype=torch.float64, device=idx.device)
    for start in range(0, n, EVAL_ROWS):
        x, y = _rows(prep, idx[:, start:start + EVAL_ROWS])
        logits = model.logits(x)
        loss += F.cross_entropy(logits, y, reduction="none").sum(1)
        correct += (_predictions(logits) == y).sum(1)
    return (loss / n).cpu().numpy(), (correct / n).cpu().numpy()


def _gradient_norms(total: torch.Tensor, squares: torch.Tensor, batches: int) -> tuple[float, float]:
    """Mean over members of ‖mean gradient‖ and ‖element-wise std of the gradients‖ (Frobenius,
    over one epoch's ``batches`` minibatches; population std) of a stacked (S, ...) weight."""
    mean = total / batches
    var = (squares / batches - mean * mean).clamp_(min=0.0)
    return float(mean.flatten(1).norm(dim=1).mean()), float(var.flatten(1).sum(1).sqrt().mean())


def _finite(value: float) -> float | None:
    """JSON-safe number: None for NaN/inf."""
    return value if math.isfinite(value) else None


def _mean(values: np.ndarray) -> float | None:
    """JSON-safe mean over members: None when any is NaN/inf (e.g. an empty test set)."""
    return _finite(float(np.mean(values)))


class Engine:
    """One run: owns the model, optimiser, schedule and store. Use :func:`execute`."""

    def __init__(self, prep: Prepared, store: RunStore, on_event: EventSink, log: logging.Logger) -> None:
        self.prep, self.cfg, self.store, self.emit, self.log = prep, prep.cfg, store, on_event, log
        self.model = prep.model
        t = self.cfg.train
        self.opt = make_optimizer(self.model, t.optimizer, t.lr, t.momentum)
        self.batch_gens = [torch.Generator().manual_seed(seed) for seed in prep.model.seeds]
        self.schedule = Schedule(self.cfg.schedule, t.epochs)
        self.planes = all_planes(self.cfg)
        self.distance_plane = self.cfg.schedule.estimator or self.planes[0]
        self.records: dict[int, dict[str, Any]] = {}  # measured epoch → event
        curve_keys = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
        if t.gradient_stats:
            layers = range(len(self.cfg.model.widths) + 1)
            curve_keys += [f"grad_mean.{i}" for i in layers] + [f"grad_std.{i}" for i in layers]
        self.curves: dict[str, list[float]] = {k: [] for k in curve_keys}
        self.gradient_norms: list[tuple[float, float]] = []
        # as if random: the suffix of the pooled planes, the pooled MI set over members, and the
        # per-member activations of the last window − 1 measured epochs (pool = "epochs")
        self.pool_suffix = pool_suffix(self.cfg)
        self.pool_history: collections.deque = collections.deque(maxlen=max(self.cfg.as_if_random.window - 1, 0))
        self.seed_pool_set: MISet | None = None
        if self.cfg.as_if_random.pool == "seeds":
            same = bool((prep.mi_idx == prep.mi_idx[:1]).all())
            flat = prep.mi_idx.flatten().cpu().numpy()
            self.seed_pool_set = (prep.mi_sets[0].pooled(self.model.size) if same else MISet.from_arrays(
                prep.dataset.x[flat], prep.dataset.y[flat], device=prep.device))
        self.epochs_done = 0
        self.previous: dict[str, Any] | None = None  # loop state (set by restore() when resuming)
        self.next_epoch: int | None = self.schedule.first()
        self.epoch = 0
        self._scratch: Ensemble | None = None
        self._last_array_write = 0.0

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> tuple[np.ndarray, np.ndarray]:
        """One pass over every member's shuffled training set; per member mean minibatch loss and accuracy."""
        p, bs = self.prep, self.cfg.train.batch_size
        size, n = p.train_idx.shape
        order = torch.stack([torch.randperm(n, generator=g) for g in self.batch_gens]).to(p.device)
        rows = p.train_idx.gather(1, order)  # (S, n): each member's epoch order of its training rows
        self.model.train()
        loss_sum = torch.zeros(size, device=p.device)
        correct = torch.zeros(size, device=p.device)
        stats = self.cfg.train.gradient_stats
        if stats:
            grad_sum = [torch.zeros_like(w) for w in self.model.weights]
            grad_sq = [torch.zeros_like(w) for w in self.model.weights]
        for start in range(0, n, bs):
            x, y = _rows(p, rows[:, start:start + bs])
            logits = self.model.logits(x)  # (S, C, B)
            losses = F.cross_entropy(logits, y, reduction="none").mean(1)
            self.opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # members share no weights: each gets its own mean-loss gradient
            if stats:  # one fused call for all layers (fewer kernel launches on a GPU)
                grads = [w.grad for w in self.model.weights]
                torch._foreach_add_(grad_sum, grads)
                torch._foreach_addcmul_(grad_sq, grads, grads)
            self.opt.step()
            loss_sum += losses.detach() * y.shape[1]
            correct += (_predictions(logits) == y).sum(1)
        if stats:
            batches = -(-n // bs)
            self.gradient_norms = [_gradient_norms(total, squares, batches) for total, squares in zip(grad_sum, grad_sq)]
        train_loss = (loss_sum / n).cpu().numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(train_loss))
        if len(bad):
            raise Diverged(f"training loss of seed {self.model.seeds[bad[0]]} became {train_loss[bad[0]]} "
                           f"at epoch {self.epochs_done + 1}")
        return train_loss, (correct / n).cpu().numpy().astype(np.float64)

    def training_threads(self) -> int:
        """Automatic thread count for training: one for up to ``ENSEMBLE_THREADED`` − 1 members
        (small networks train fastest on one thread and never oversubscribe a shared machine),
        else all of torch's threads (0) for the batched matrix products of a larger ensemble."""
        return 1 if self.model.size < ENSEMBLE_THREADED else 0

    # ------------------------------------------------------------------ measurement
    def member_chunk(self) -> int:
        """Members whose MI-set activations fit in about 256 MB together (at least one)."""
        p = self.prep
        per_member = p.mi_idx.shape[1] * (sum(self.cfg.model.widths) + p.dataset.n_classes) * 4
        return max(1, min(self.model.size, (256 << 20) // max(per_member, 1)))

    def member_workers(self, threads: int) -> int:
        """Threads that estimate members side by side (each with one torch thread): up to ``threads``
        for an ensemble on the CPU whose estimators are all thread-safe; else 1 (torch's own threads)."""
        safe = all(est.thread_safe for est in self.cfg.estimators.values())
        if self.model.size < 2 or not safe or self.prep.device.type != "cpu":
            return 1
        return max(1, min(threads, self.model.size))

    @torch.no_grad()
    def measure(self, model: Ensemble, epoch: int) -> dict[str, Any]:
        """Every estimator's plane for every member on its MI set, plus loss/accuracy.

        ``planes[name]["ixt"/"ity"]`` are the means over members (per layer, bits); with
        more than one member ``"ixt_seeds"``/``"ity_seeds"`` hold each member's values (S × L)
        and ``"seeds"`` each member's loss and accuracy.
        """
        p = self.prep
        model.eval()
        t0 = time.perf_counter()
        per_member: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        current: list[list[torch.Tensor]] = []  # per member, per layer (as if random only)
        pooled: dict[str, dict[str, Any]] = {}
        chunk = self.member_chunk()
        threads = self.cfg.train.threads or torch.get_num_threads()
        workers = self.member_workers(threads)
        # 0 threads: all cores (the pairwise KDE work scales): members side by side (thread_map), or
        # for one member, its layers side by side or torch's own threads inside each
        with torch_threads(self.cfg.train.threads):
            for first in range(0, model.size, chunk):
                members = slice(first, min(first + chunk, model.size))
                x_mi = p.x_all[p.mi_idx[members]]
                layers = model.forward_layers(x_mi, members)
                for i, layer in enumerate(layers):
                    bad = (~torch.isfinite(layer)).flatten(1).any(1).nonzero()
                    if len(bad):
                        raise Diverged(f"activations of layer {model.layer_names[i]} of seed "
                                       f"{model.seeds[first + int(bad[0])]} are NaN/inf at epoch {epoch}")
                draws = self.centre_draws(model, x_mi, members)

                def member_planes(j: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
                    """Every estimator's planes for member first + j: (name, ixt, ity) in order."""
                    member_layers = [layer[j] for layer in layers]
                    out = []
                    for est in self.cfg.estimators.values():
                        given = [d[:, j] for d in draws[est.draws]] if est.needs_centres else member_layers
                        for name, (ixt, ity) in est.estimate(given, p.mi_sets[first + j]).items():
                            out.append((name, np.asarray(ixt), np.asarray(ity)))
                    return out

                indices = range(layers[0].shape[0])
                for planes_j in thread_map(member_planes, indices, workers):
                    for name, ixt, ity in planes_j:
                        per_member.setdefault(name, []).append((ixt, ity))
                if self.pool_suffix:
                    current.extend([layer[j].detach().to("cpu", copy=True) for layer in layers] for j in indices)
            if self.pool_suffix:
                pooled = self.pooled_planes(current)
        planes = {**_member_planes(per_member), **pooled}
        train_loss, train_acc = _evaluate(model, p, p.train_idx)
        test_loss, test_acc = _evaluate(model, p, p.test_idx)
        if model.quantize_bits:  # the same weights with float activations, for comparison
            model.quantized = False
            try:
                float_test_acc = _evaluate(model, p, p.test_idx)[1]
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

    def centre_draws(self, model: Ensemble, x_mi: torch.Tensor, members: slice) -> dict[int, list[torch.Tensor]]:
        """For estimators of noisy networks: per number of draws m they ask for, per layer, the
        pre-noise activations of m noisy forward passes, (m, S', N, d)."""
        wanted = sorted({est.draws for est in self.cfg.estimators.values() if est.needs_centres})
        out = {}
        for m in wanted:
            passes = [model.forward_layers(x_mi, members, centres=True) for _ in range(m)]
            out[m] = [torch.stack([p[i] for p in passes]) for i in range(len(passes[0]))]
        return out

    def pooled_planes(self, current: list[list[torch.Tensor]]) -> dict[str, dict[str, Any]]:
        """The as-if-random planes from this epoch's per-member activations (``current``).

        pool = "seeds": every member's activations stacked, one plane. pool = "epochs": per member,
        its activations at this and the previous window − 1 measured epochs stacked (fewer at the
        start), then the mean over members (and each member's values for an ensemble).
        """
        device = self.prep.device
        poolers = [est for est in self.cfg.estimators.values() if est.pools]
        out: dict[str, dict[str, Any]] = {}
        if self.cfg.as_if_random.pool == "seeds":
            layers = [torch.cat([member[i] for member in current]).to(device) for i in range(len(current[0]))]
            for est in poolers:
                for name, (ixt, ity) in est.estimate(layers, self.seed_pool_set).items():
                    out[name + self.pool_suffix] = {"ixt": [float(v) for v in ixt], "ity": [float(v) for v in ity]}
            return out
        values: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for j, member in enumerate(current):
            window = [past[j] for past in self.pool_history] + [member]
            layers = [torch.cat([epoch_layers[i] for epoch_layers in window]).to(device) for i in range(len(member))]
            mi_set = self.prep.mi_sets[j].pooled(len(window))
            for est in poolers:
                for name, (ixt, ity) in est.estimate(layers, mi_set).items():
                    values.setdefault(name + self.pool_suffix, []).append((np.asarray(ixt), np.asarray(ity)))
        if self.pool_history.maxlen:
            self.pool_history.append(current)
        return _member_planes(values)

    def scratch(self, checkpoint: dict[str, torch.Tensor]) -> Ensemble:
        """A second copy of the network (made once) holding the weights of ``checkpoint`` arrays."""
        if self._scratch is None:
            self._scratch = copy.deepcopy(self.model)
        self._scratch.load_state_arrays(checkpoint)
        return self._scratch

    @torch.no_grad()
    def member_layers(self, checkpoint: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per member, per layer: the MI set's activations (CPU) of the network with ``checkpoint``'s weights."""
        model = self.scratch(checkpoint)
        model.eval()
        p = self.prep
        return [[layer[0].to("cpu") for layer in model.forward_layers(p.x_all[p.mi_idx[j]], slice(j, j + 1))]
                for j in range(model.size)]

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
                if self.model.size > 1 and all(f"{key}_seeds" in self.records[e]["planes"][name] for e in epochs):
                    arrays[f"{name}.{key}_seeds"] = np.asarray(  # (epochs, seeds, layers)
                        [self.records[e]["planes"][name][f"{key}_seeds"] for e in epochs],
                        dtype=np.float64).reshape(len(epochs), self.model.size, -1)
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
        out = {"resume.rng": np.stack([g.get_state().numpy() for g in self.batch_gens]),
               "resume.skip": np.asarray(self.schedule.skip)}
        if self.model.noisy:
            out["resume.noise_rng"] = self.model.generator(self.prep.device).get_state().cpu().numpy()
        for index, state in self.opt.state_dict()["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"resume.opt.{index}.{name}"] = value.detach().cpu().numpy()
        return out

    def restore(self, arrays: dict[str, np.ndarray], events: list[dict[str, Any]], curves: dict[str, np.ndarray]) -> None:
        """Continue after the checkpointed epoch of ``arrays`` (see :func:`resume`)."""
        epoch = int(arrays["resume.epoch"])
        weights = {k: torch.as_tensor(v) for k, v in arrays.items() if not k.startswith("resume.")}
        try:
            self.model.load_state_arrays(weights)
        except ValueError as exc:
            raise UserError(f"the checkpoint of epoch {epoch} does not fit this run's network ({exc}); "
                            "it was written by another version of ibtui") from None
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            if key.startswith("resume.opt."):
                index, name = key[len("resume.opt."):].split(".", 1)
                state.setdefault(int(index), {})[name] = torch.as_tensor(value).to(self.prep.device)
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})
        states = np.asarray(arrays["resume.rng"])
        if states.ndim != 2 or states.shape[0] != len(self.batch_gens):
            raise UserError(f"the checkpoint of epoch {epoch} has batch-order states for {states.shape[0]} "
                            f"seed(s); this run has {len(self.batch_gens)}")
        for generator, state in zip(self.batch_gens, states):
            generator.set_state(torch.as_tensor(state, dtype=torch.uint8))
        if self.model.noisy and "resume.noise_rng" in arrays:
            self.model.generator(self.prep.device).set_state(torch.as_tensor(arrays["resume.noise_rng"], dtype=torch.uint8))
        self.schedule.skip = int(arrays["resume.skip"])
        for event in events:
            if int(event["epoch"]) <= epoch:
                self.records[int(event["epoch"])] = event
        if self.pool_history.maxlen:  # as if random over epochs: the window before the resume point
            for past in sorted(e for e in self.records if e < epoch)[-self.pool_history.maxlen:]:
                kept = read_npz(checkpoint_path(self.store.path, past))
                self.pool_history.append(self.member_layers(
                    {k: torch.as_tensor(v) for k, v in kept.items() if not k.startswith("resume.")}))
            self.pool_history.append(self.member_layers(weights))
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
                with torch_threads(cfg.train.threads or self.training_threads()):
                    losses, accs = self.train_epoch()
                    test_losses, test_accs = _evaluate(self.model, self.prep, self.prep.test_idx)
                train_loss, train_acc = float(losses.mean()), float(accs.mean())
                test_loss, test_acc = float(test_losses.mean()), float(test_accs.mean())
                self.epochs_done = epoch
                values = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                          "test_acc": test_acc}
                event = {"type": "epoch", "epoch": epoch, "epochs": cfg.train.epochs, "train_loss": train_loss,
                         "train_acc": train_acc, "test_loss": _finite(test_loss), "test_acc": _finite(test_acc)}
                if cfg.train.gradient_stats:
                    for layer, (mean_norm, std_norm) in enumerate(self.gradient_norms):
                        values[f"grad_mean.{layer}"], values[f"grad_std.{layer}"] = mean_norm, std_norm
                    event["grad_mean"] = [_finite(m) for m, _ in self.gradient_norms]
                    event["grad_std"] = [_finite(v) for _, v in self.gradient_norms]
                for key in self.curves:
                    self.curves[key].append(values[key])
                self.emit(event)
            if keep:
                kept[epoch] = _cpu_state(self.model)
            if epoch == next_epoch:
                rec = self.measure(self.model, epoch)
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


def compression_table(ixt: np.ndarray, ity: np.ndarray, epochs: np.ndarray, layers: list[str]) -> list[dict[str, Any]]:
    """Per layer of (E, L) trajectories: final I(X;T) and I(T;Y), peak I(X;T) with its epoch, and
    compression = peak − final I(X;T) (bits; the drop from the peak, 0 when the last point is the peak)."""
    peak = ixt.argmax(axis=0)
    return [
        {"layer": layers[i], "final_ixt": float(ixt[-1, i]), "final_ity": float(ity[-1, i]),
         "peak_ixt": float(ixt[peak[i], i]), "peak_epoch": int(epochs[peak[i]]),
         "compression": float(ixt[peak[i], i] - ixt[-1, i])}
        for i in range(ixt.shape[1])
    ]


def seed_spread(ixt: np.ndarray, epochs: np.ndarray) -> dict[str, float]:
    """Across members, from one layer's (E, S) I(X;T) trajectories: mean and standard deviation
    (ddof = 1 where S > 1) of each member's peak, peak epoch, final value and compression (bits)."""
    peak_at = ixt.argmax(axis=0)
    members = np.arange(ixt.shape[1])
    stats = {"peak_ixt": ixt[peak_at, members], "peak_epoch": epochs[peak_at].astype(np.float64),
             "final_ixt": ixt[-1], "compression": ixt[peak_at, members] - ixt[-1]}
    ddof = 1 if ixt.shape[1] > 1 else 0
    out: dict[str, float] = {}
    for key, values in stats.items():
        out[f"{key}_mean"] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=ddof))
    return out


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
        planes[name] = compression_table(ixt, ity, epochs, layers)
        if engine.model.size > 1 and all("ixt_seeds" in r["planes"][name] for r in records):
            seeds_ixt = np.asarray([r["planes"][name]["ixt_seeds"] for r in records])  # (E, S, L)
            for i, row in enumerate(planes[name]):
                row["seeds"] = seed_spread(seeds_ixt[:, :, i], epochs)
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
