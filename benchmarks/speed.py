"""Estimator speed against reference-style implementations, side by side in one process.

    python benchmarks/speed.py [--repeats 5] [--ref-repeats 2] [--out benchmarks/results/speed.json] [--only estimators]

On the 12-bit task (N = 4096, the untrained 10-7-5-4-3 tanh network, all 6 layers):
- binning MI, ibtui (rows packed into one integer each, entropies from bincounts or sorts, numpy)
  vs the anchors' code (IDNNs ``calc_information_for_layer``): a Python loop over the distinct
  inputs (and labels), each masking its rows of the binned matrix and counting them with
  np.unique over a void view;
- KDE upper bound, ibtui (symmetric blocks, chunked torch, float64; float32 reported too) vs a
  reference-style pairwise computation with a Python loop over samples (one row of distances at
  a time).
Both sides compute the same numbers (checked); the ratio is what matters. Each side's time is the
best of its runs (``--repeats``, ``--ref-repeats``), as timeit reports; ibtui's runs are interleaved
with the reference's (before, between and after them), so both are timed over the same stretch of a
machine whose speed drifts.
- training, the engine's own loop (``Engine.train_epoch``, saxe-tanh settings): one network at a
  time vs an ensemble of ``--seeds`` networks trained together, per network-epoch, each with the
  engine's automatic thread policy (and the ensemble on one thread too).
Prints JSON with the machine's description and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from ibtui.engine.data import load_dataset
from ibtui.engine.model import MLP
from ibtui.estimators import KDE, Binning, MISet


def entropy_of_rows_bits(rows: np.ndarray) -> float:
    """Plug-in entropy of the distinct rows of a matrix, as IDNNs does it: np.unique over a void view."""
    rows = np.ascontiguousarray(rows)
    void_rows = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1])))
    _, counts = np.unique(void_rows, return_counts=True)
    p = counts / float(counts.sum())
    return float(-np.sum(p * np.log2(p)))


def conditional_entropy_bits(codes: np.ndarray, given: np.ndarray) -> float:
    """H(T | G) as IDNNs' ``calc_condtion_entropy``: for each distinct value i of G, mask the rows of the
    whole binned matrix (``codes[given == i, :]``) and weight their row entropy by p(i)."""
    values, counts = np.unique(given, return_counts=True)
    p_given = counts / float(counts.sum())
    return float(sum(p_i * entropy_of_rows_bits(codes[given == i, :]) for i, p_i in zip(values, p_given)))


def reference_binning(layers: list[np.ndarray], x_ids: np.ndarray, y: np.ndarray, bin_size: float) -> np.ndarray:
    """I(X;T), I(T;Y) per layer the anchors' way (Tishby's IDNNs ``calc_information_for_layer``, run
    serially): bin, H(T) over all rows, then a Python loop over the distinct inputs and over the labels."""
    out = []
    for h in layers:
        codes = np.floor(h / bin_size).astype(np.int64)
        h_t = entropy_of_rows_bits(codes)
        out.append((h_t - conditional_entropy_bits(codes, x_ids), h_t - conditional_entropy_bits(codes, y)))
    return np.asarray(out)


def reference_kde_upper_ixt(layers: list[np.ndarray], variance: float) -> np.ndarray:
    """KDE upper bound on I(X;T) per layer (bits), one row of pairwise distances at a time."""
    out = []
    for h in layers:
        n = len(h)
        total = 0.0
        for i in range(n):  # the per-sample loop
            d = ((h - h[i]) ** 2).sum(axis=1)
            total += logsumexp(-d / (2 * variance)) - np.log(n)
        out.append(-total / n / np.log(2))
    return np.asarray(out)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best of ``repeats`` wall times (as timeit: slower runs are other processes' interference, which
    on a shared machine can double a run) and the result."""
    result, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def timed_side_by_side(fast, reference, repeats: int, ref_repeats: int) -> tuple[float, object, float, object]:
    """Best-of times and results of ``fast`` (``repeats`` runs) and ``reference`` (``ref_repeats``
    runs), interleaved: the fast runs are spread over the reference's runs (before, between, after),
    so both sides are timed across the same stretch of a machine whose speed drifts."""
    fast_times, ref_times, fast_result, ref_result = [], [], None, None
    slots = ref_repeats + 1
    for slot in range(slots):
        for _ in range(repeats // slots + (slot < repeats % slots)):
            start = time.perf_counter()
            fast_result = fast()
            fast_times.append(time.perf_counter() - start)
        if slot < ref_repeats:
            start = time.perf_counter()
            ref_result = reference()
            ref_times.append(time.perf_counter() - start)
    return min(fast_times), fast_result, min(ref_times), ref_result


def training_speed(seeds: int, epochs: int, threads: int | None = None) -> dict:
    """Network-epochs per second of the engine's training loop for an ensemble of ``seeds`` networks."""
    import logging

    from ibtui.config import load_preset
    from ibtui.engine.measure import torch_threads
    from ibtui.engine.runner import Engine, prepare

    cfg = load_preset("saxe-tanh", [f"train.seeds={seeds}", 'train.device="cpu"'])
    engine = Engine(prepare(cfg), None, lambda event: None, logging.getLogger("benchmark"))
    n_threads = engine.training_threads() if threads is None else threads
    with torch_threads(n_threads):
        engine.train_epoch()  # warm-up
        start = time.perf_counter()
        for _ in range(epochs):
            engine.train_epoch()
        seconds = time.perf_counter() - start
    return {"seeds": seeds, "threads": n_threads or torch.get_num_threads(), "epochs": epochs,
            "ms_per_epoch": round(1000 * seconds / epochs, 2),
            "network_epochs_per_s": round(seeds * epochs / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ibtui's estimators (best of)")
    parser.add_argument("--ref-repeats", type=int, default=2, help="timed runs of the reference code (best of)")
    parser.add_argument("--out", default="benchmarks/results/speed.json")
    parser.add_argument("--seeds", type=int, default=50, help="ensemble size for the training comparison")
    parser.add_argument("--epochs", type=int, default=40, help="timed training epochs per configuration")
    parser.add_argument("--only", choices=("all", "estimators", "training"), default="all",
                        help="run only the estimator or only the training comparison")
    args = parser.parse_args()

    data = load_dataset("12bit")
    torch.manual_seed(0)
    model = MLP(12, [10, 7, 5, 4, 3], 2)
    with torch.no_grad():
        layers = model.forward_layers(torch.as_tensor(data.x))
    mi_set = MISet.from_arrays(data.x, data.y)

    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "n": mi_set.n, "layers": len(layers),
    }
    if args.only != "training":
        report.update(estimator_speed(layers, mi_set, args.repeats, args.ref_repeats))
    if args.only != "estimators":
        report["training"] = training_report(args.seeds, args.epochs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def estimator_speed(layers: list[torch.Tensor], mi_set: MISet, repeats: int, ref_repeats: int = 2) -> dict:
    np_layers = [h.double().numpy() for h in layers]
    x_ids, y = mi_set.x_ids.numpy(), mi_set.y.numpy()
    report: dict = {}
    # The activations' own dtype (float32), as Binning and the anchors bin them: identical codes.
    fast_s, fast, ref_s, ref = timed_side_by_side(
        lambda: Binning(0.07).estimate(layers, mi_set)["binning"],
        lambda: reference_binning([h.numpy() for h in layers], x_ids, y, 0.07), repeats, ref_repeats)
    assert np.allclose(np.stack(fast, axis=1), ref, rtol=0, atol=1e-9), "binning results differ"
    report["binning_all_layers"] = {"ibtui_ms": round(fast_s * 1000, 2), "reference_ms": round(ref_s * 1000, 1),
                                    "speedup": round(ref_s / fast_s, 1)}

    fast_s, fast, ref_s, ref = timed_side_by_side(lambda: KDE(1e-3).estimate(layers, mi_set)["kde_upper"][0],
                                                  lambda: reference_kde_upper_ixt(np_layers, 1e-3), repeats, ref_repeats)
    assert np.allclose(fast, ref, atol=1e-6), "KDE results differ"
    report["kde_upper_all_layers"] = {"ibtui_ms": round(fast_s * 1000, 1), "reference_ms": round(ref_s * 1000, 1),
                                      "speedup": round(ref_s / fast_s, 1),
                                      "note": "precision float64 (the default); ibtui computes the upper and the "
                                              "lower bound and I(T;Y) in that time"}
    f32_s, f32 = timed(lambda: KDE(1e-3, precision="float32").estimate(layers, mi_set)["kde_upper"][0], repeats)
    assert np.allclose(f32, ref, atol=1e-4), "float32 KDE results differ"
    report["kde_upper_all_layers_float32"] = {"ibtui_ms": round(f32_s * 1000, 1), "speedup": round(ref_s / f32_s, 1),
                                              "max_abs_difference_bits": float(np.abs(f32 - ref).max())}
    return report


def training_report(seeds: int, epochs: int) -> dict:
    single = training_speed(1, epochs)
    together = training_speed(seeds, epochs)
    one_thread = training_speed(seeds, epochs, threads=1)
    return {
        "one_network": single, "ensemble": together, "ensemble_one_thread": one_thread,
        "speedup_per_network_epoch": round(together["network_epochs_per_s"] / single["network_epochs_per_s"], 1),
        "speedup_one_thread": round(one_thread["network_epochs_per_s"] / single["network_epochs_per_s"], 1),
    }


if __name__ == "__main__":
    main()
