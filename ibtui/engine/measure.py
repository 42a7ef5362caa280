"""One measurement: every member's activations on its MI set → every estimator's planes, in bits.

:func:`measure_planes` is the only place where a network is turned into information planes. The
training loop (each measured epoch), delta_exact bisection (from kept weights) and ``ibtui
analyze`` (from checkpoints) all call it, so a re-analysis at the run's own settings gives the
run's planes back.

Deterministic networks: one forward pass of the MI set per member; each estimator gets the
layers (N, d_l).

Noisy networks (``model.noise_std`` > 0, T = S + Z after every hidden layer): the measurement
draws its noise from :func:`measurement_generator`, seeded by (member seed, epoch), never from
the training noise, so measuring changes nothing in training and the same epoch measured again
(a resume, a re-analysis) draws the same noise. P noisy passes are run per member. Estimators of
the known Gaussian mixture (``needs_centres``: noisy_mc) get the pre-noise centres of their
``draws`` first passes (m, N, d). Plug-in estimators (``pools``: the binning family, discrete)
get the T of the first ``noise_draws`` passes stacked, each input ``noise_draws`` times, and
estimate H(T|X) from those repeats (:func:`pooled_planes`; the estimate is capped at
log2 ``noise_draws`` and flagged when it sits there). Other estimators assume a deterministic
layer and are refused for noisy networks at configuration time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from ibtui.engine.model import Ensemble
from ibtui.estimators import Estimator, MISet, PooledPlane
from ibtui.estimators.base import check_estimators
from ibtui.rundir.records import PlaneValues


class Diverged(RuntimeError):
    """Loss or activations became NaN/inf."""


def stack_members(rows: Sequence[Any]) -> PlaneValues:
    """Per-member (ixt, ity) or ``PooledPlane`` values (each (L,)) → one ``PlaneValues`` (S, L)."""
    first = rows[0]
    if isinstance(first, PooledPlane):
        return PlaneValues(np.stack([r.ixt for r in rows]).astype(np.float64),
                            np.stack([r.ity for r in rows]).astype(np.float64),
                            np.stack([r.h_t_x for r in rows]).astype(np.float64), float(first.cap))
    return PlaneValues(np.stack([np.asarray(r[0]) for r in rows]).astype(np.float64),
                        np.stack([np.asarray(r[1]) for r in rows]).astype(np.float64))


def measurement_generator(seed: int, epoch: int, device: torch.device | str = "cpu", stream: int = 0) -> torch.Generator:
    """The noise generator of one member's measurement at ``epoch``: seeded from (seed, epoch) only
    (``stream`` 0: the MI passes; 1: the loss/accuracy evaluation of the measurement)."""
    state = np.random.SeedSequence([int(seed), int(epoch), 0x1B7, int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


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


def pooled_planes(stacked: Sequence[torch.Tensor], mi_set: MISet, copies: int,
                  estimators: Sequence[Estimator]) -> list[dict[str, PooledPlane]]:
    """Plug-in planes of samples that repeat every input ``copies`` times: ``stacked[l]`` is
    (copies, N, d_l) (copy k of sample n is row k·N + n), ``mi_set`` the N samples' set."""
    layers = [h.reshape(-1, h.shape[-1]) for h in stacked]
    pooled_set = mi_set.pooled(copies)
    return [est.estimate_pooled(layers, pooled_set) for est in estimators]


def check_finite(layers: Sequence[torch.Tensor], names: Sequence[str], seeds: Sequence[int], epoch: int) -> None:
    """Diverged naming the first layer and member with NaN/inf activations; layers are (S', N, d)."""
    for name, layer in zip(names, layers):
        bad = (~torch.isfinite(layer)).flatten(1).any(1).nonzero()
        if len(bad):
            raise Diverged(f"activations of layer {name} of seed {seeds[int(bad[0])]} are NaN/inf at epoch {epoch}")


def member_chunk(model: Ensemble, n_mi: int, budget_bytes: int = 256 << 20) -> int:
    """Members whose MI-set activations fit in about ``budget_bytes`` together (at least one)."""
    per_member = n_mi * sum(model.widths) * 4
    return max(1, min(model.size, budget_bytes // max(per_member, 1)))


def member_workers(model: Ensemble, estimators: Sequence[Estimator], threads: int) -> int:
    """Threads that estimate members side by side (each with one torch thread): up to ``threads``
    for an ensemble on the CPU whose estimators are all thread-safe; else 1 (torch's own threads)."""
    device = model.weights[0].device
    if model.size < 2 or not all(est.thread_safe for est in estimators) or device.type != "cpu":
        return 1
    return max(1, min(threads, model.size))


def estimate_layers(layers: Sequence[torch.Tensor], mi_set: MISet,
                    estimators: Sequence[Estimator]) -> list[dict[str, Any]]:
    """One network's layer activations ((N, d_l) each, on any device) → every estimator's planes,
    per estimator (in order) plane name → (I(X;T), I(T;Y)) per layer in bits. The core of every
    measurement: ``measure_planes`` (runs, analyze) and ``ibtui.Recorder`` (any PyTorch model)."""
    return [est.estimate(layers, mi_set) for est in estimators]


def stack_results(per_member: Sequence[list[dict[str, Any]]]) -> list[dict[str, PlaneValues]]:
    """Per member ``estimate_layers`` results → per estimator, plane name → ``PlaneValues`` (S, L)."""
    return [{name: stack_members([member[e][name] for member in per_member]) for name in per_member[0][e]}
            for e in range(len(per_member[0]))]


@torch.no_grad()
def measure_planes(model: Ensemble, x_all: torch.Tensor, mi_idx: torch.Tensor, mi_sets: Sequence[MISet],
                   estimators: Sequence[Estimator], epoch: int, noise_draws: int = 8,
                   workers: int = 1) -> list[dict[str, PlaneValues]]:
    """Every estimator's planes for every member of ``model`` at ``epoch``.

    x_all: (rows, D) inputs; mi_idx: (S, N) each member's MI-set rows; mi_sets: each member's
    ``MISet``; noise_draws: noisy passes pooled by plug-in estimators on a noisy network;
    workers: members estimated side by side (``thread_map``; 1 when an estimator is not
    thread-safe). Returns, per estimator (in order), plane name → ``PlaneValues`` (members × layers).
    Raises ``Diverged`` for NaN/inf activations, ParameterError for parameters that do not fit the
    MI sets (``check_estimators``).
    """
    check_estimators(estimators, mi_sets)
    model.eval()
    size = model.size
    if not all(est.thread_safe for est in estimators):
        workers = 1
    passes = 0
    if model.noisy:
        passes = max([est.draws for est in estimators if est.needs_centres]
                     + [noise_draws for est in estimators if est.pools] + [1])
    per_member: list[list[dict[str, Any]]] = []  # member → per estimator → plane → value

    def estimate_noisy(j: int) -> list[dict[str, Any]]:
        generator = measurement_generator(model.seeds[j], epoch, x_all.device)
        x = x_all[mi_idx[j]]
        runs = [model.forward_both(x, slice(j, j + 1), generator) for _ in range(passes)]
        centres = [torch.stack([run[0][l][0] for run in runs]) for l in range(len(runs[0][0]))]  # (P, N, d)
        noisy = [torch.stack([run[1][l][0] for run in runs]) for l in range(len(runs[0][1]))]
        check_finite([c[:1] for c in noisy], model.layer_names, model.seeds[j:j + 1], epoch)
        out = []
        for est in estimators:
            if est.needs_centres:
                out.append(est.estimate([c[:est.draws] for c in centres], mi_sets[j]))
            else:  # validated: a pooling estimator
                out.append(pooled_planes([t[:noise_draws] for t in noisy], mi_sets[j], noise_draws, [est])[0])
        return out

    if model.noisy:
        per_member = thread_map(estimate_noisy, list(range(size)), workers)
    else:
        chunk = member_chunk(model, mi_idx.shape[1])
        for first in range(0, size, chunk):
            members = slice(first, min(first + chunk, size))
            layers = model.forward_layers(x_all[mi_idx[members]], members)
            check_finite(layers, model.layer_names, model.seeds[members], epoch)
            indices = list(range(layers[0].shape[0]))
            per_member += thread_map(lambda i: estimate_layers([layer[i] for layer in layers], mi_sets[first + i],
                                                               estimators), indices, workers)
    return stack_results(per_member)
