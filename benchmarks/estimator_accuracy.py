"""Accuracy of every registered estimator against analytic ground truth; writes docs/estimators.md.

    python benchmarks/estimator_accuracy.py [--quick] [--out docs/estimators.md] [--seed 0]

Families (see the generated document for the definitions and the parameter rules):
  a. I(T;Y), T a d-dimensional two-class Gaussian mixture (means ±μ·e1, identity covariance);
  b. the same after a bijection of T (random affine map; elementwise sinh): the truth is unchanged;
  c. the same with independent Student-t (ν = 3) coordinates instead of Gaussian ones;
  d. discrete T (k equally likely values) with Y a deterministic or noisy function of T;
  e. I(X;T) of correlated Gaussians, 1-D and d-D (independent pairs);
  f. family (a) at d = 5 for several sample sizes.
Plus the time per call of each estimator (default parameters) on the 6 layers of the
untrained 12-bit network at N = 4096.

Every number in the document is computed by this script (nothing typed in); all randomness is
seeded from --seed. ``--quick`` uses N = 1024 and drops N = 10,000 from family (f).
The core is ``run_benchmark(...)`` (returns a ``Report``) and ``render_markdown(report)``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import expit, gammaln

from ibtui.estimators import ESTIMATORS, Estimator, MISet, sources_digest

MU = 1.0  # class means ±MU·e1 in families (a), (b), (c), (f)
NU = 3.0  # Student-t degrees of freedom in family (c)
DIMS = (1, 2, 5, 10, 20)
N_MC = 1_000_000
FAMILY_IDS = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "truth": 7}


# --------------------------------------------------------------------------------------------
# Rows: one per plane of every registered estimator (KDE has two planes, upper and lower)
# --------------------------------------------------------------------------------------------


def estimator_rows() -> list[tuple[str, str]]:
    """(row name = plane name, estimator kind) for every registered estimator, registry order."""
    return [(plane, kind) for kind, cls in ESTIMATORS.items() for plane in cls().planes]


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


def binary_entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    out = np.zeros_like(p)
    inner = (p > 0) & (p < 1)
    q = p[inner]
    out[inner] = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    return out


def _t_logpdf(x: np.ndarray, nu: float) -> np.ndarray:
    return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
            - (nu + 1) / 2 * np.log1p(x * x / nu))


def mixture_truth_bits(mu: float = MU, dist: str = "gauss", nu: float = NU, n_mc: int = N_MC,
                       seed: int = 0) -> float:
    """I(T;Y) in bits for Y ∈ {0,1} equiprobable and T | Y ~ (±mu·e1 + independent unit coordinates).

    Monte Carlo over T of H(Y) − H(Y | T) with the exact posterior. The coordinates 2..d are
    independent of Y and identically distributed in both classes, so their likelihoods cancel
    exactly in the posterior: the truth is the same for every d and only t1 is drawn.
    dist = "gauss" (standard normal coordinates; posterior logit 2·mu·t1) or "t" (Student-t, nu).
    Standard error about std(H(Y|t))/sqrt(n_mc) ≈ 3e-4 bits at n_mc = 1e6.
    """
    rng = np.random.default_rng([seed, FAMILY_IDS["truth"]])
    y = rng.integers(0, 2, n_mc)
    centre = np.where(y == 1, mu, -mu)
    if dist == "gauss":
        t1 = centre + rng.standard_normal(n_mc)
        logit = 2.0 * mu * t1
    elif dist == "t":
        t1 = centre + rng.standard_t(nu, n_mc)
        logit = _t_logpdf(t1 - mu, nu) - _t_logpdf(t1 + mu, nu)
    else:
        raise ValueError(f"unknown dist {dist!r}")
    return float(1.0 - binary_entropy_bits(expit(logit)).mean())


def gaussian_pair_truth_bits(rhos: np.ndarray) -> float:
    """I(X;T) in bits for independent pairs (X_i, T_i) of correlation rho_i: −½ Σ log2(1 − rho_i²)."""
    return float(-0.5 * np.log2(1.0 - np.asarray(rhos, dtype=np.float64) ** 2).sum())


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


def sample_mixture(n: int, d: int, dist: str, seed: int, family: str = "a") -> tuple[np.ndarray, np.ndarray]:
    """T (n, d) float64 and balanced labels y (n,) (exactly n//2 per class, shuffled)."""
    rng = np.random.default_rng([seed, FAMILY_IDS[family], d, n])
    y = np.arange(n) % 2
    rng.shuffle(y)
    t = rng.standard_normal((n, d)) if dist == "gauss" else rng.standard_t(NU, (n, d))
    t[:, 0] += np.where(y == 1, MU, -MU)
    return t, y


def random_affine(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A = Q1 · diag(s) · Q2 (Q random orthogonal, s geometric in [0.5, 2]) and b ~ N(0, 9 I)."""
    rng = np.random.default_rng([seed, FAMILY_IDS["b"], d, 99])
    q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.geomspace(0.5, 2.0, d) if d > 1 else np.array([0.5])
    return q1 @ np.diag(s) @ q2, 3.0 * rng.standard_normal(d)


def robust_scale(t: np.ndarray) -> float:
    """Median over units of IQR / 1.349 (the standard deviation for a Gaussian unit)."""
    q75, q25 = np.percentile(t, [75, 25], axis=0)
    return float(np.median((q75 - q25) / 1.349))


# --------------------------------------------------------------------------------------------
# Estimator parameters
# --------------------------------------------------------------------------------------------


def continuous_params(t: np.ndarray) -> dict[str, dict]:
    """Parameters for a continuous layer t (N, d), relative to its scale s = robust_scale(t).

    binning: bin_size = s/4; binning_fixed: 30 edges on the 0.5 % .. 99.5 % quantiles of the
    pooled activations; binning_adaptive: 30 bins (the paper's value); noisy-layer estimators
    (kde, gaussian, lga, gae, noisy_mc with σ = s/10): σ² = (s/10)², small next to the data's scale; ksg k = 3,
    lga k = 10, gae k = 5 (their defaults).
    """
    s = robust_scale(t)
    low, high = np.percentile(t, [0.5, 99.5])
    sigma2 = (s / 10.0) ** 2
    return {
        "binning_fixed": {"bins": 30, "low": float(low), "high": float(high)},
        "binning": {"bin_size": s / 4.0},
        "binning_adaptive": {"bins": 30},
        "discrete": {},
        "kde": {"noise_variance": sigma2},
        "gaussian": {"noise_variance": sigma2},
        "ksg": {"k": 3},
        "lga": {"k": 10, "noise_variance": sigma2},
        "gae": {"k": 5, "noise_variance": sigma2},
        "noisy_mc": {"noise_std": math.sqrt(sigma2)},
        "infonce": {"noise_variance": sigma2},
        "renyi": {"width": "silverman"},
        "edge": {},
    }


def discrete_params(levels: np.ndarray) -> dict[str, dict]:
    """Parameters for a layer whose units take the values ``levels`` (sorted, equally spaced)."""
    spacing = float(np.min(np.diff(levels))) if len(levels) > 1 else 1.0
    return {
        "binning_fixed": {"bins": len(levels) + 1, "low": float(levels[0]) - spacing / 2,
                          "high": float(levels[-1]) + spacing / 2},
        "binning": {"bin_size": spacing / 2},
        "binning_adaptive": {"bins": 30},
        "discrete": {},
        "kde": {"noise_variance": (spacing / 10) ** 2},
        "gaussian": {"noise_variance": (spacing / 10) ** 2},
        "ksg": {"k": 3},
        "lga": {"k": 10, "noise_variance": (spacing / 10) ** 2},
        "gae": {"k": 5, "noise_variance": (spacing / 10) ** 2},
        "noisy_mc": {"noise_std": spacing / 10},
        "infonce": {"noise_variance": (spacing / 10) ** 2},
        "renyi": {"width": spacing / 10},
        "edge": {},
    }


def build(kind: str, params: dict[str, dict]) -> Estimator:
    estimator = ESTIMATORS[kind](**params.get(kind, {}))
    estimator.validate()
    return estimator


def fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "none"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

Cell = float | str  # an estimate in bits, or "n/a: reason" / "error: message"


@dataclass
class Table:
    key: str
    title: str
    text: str
    columns: list[str]
    truth: list[float]
    cells: dict[str, list[Cell]] = field(default_factory=dict)
    deltas: dict[str, list[float | None]] | None = None  # family (b): change against untransformed
    params: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    in_headline: bool = True

    def errors(self, row: str) -> list[float]:
        return [abs(v - t) for v, t in zip(self.cells.get(row, []), self.truth) if isinstance(v, float)
                and math.isfinite(v)]


@dataclass
class Report:
    settings: dict
    tables: list[Table]
    timing: list[tuple[str, str, list[float]]]  # kind, params, s per layer at each TIMING_SIZES
    seconds: float = 0.0


def run_estimators(layers: list[np.ndarray], mi_set: MISet, params: dict[str, dict], quantity: str,
                   na: dict[str, str]) -> dict[str, Cell]:
    """Value per row (plane) of ``quantity`` ("ixt" or "ity"); rows whose kind is in ``na`` get its reason."""
    ixt, ity = both_quantities(layers, mi_set, params, na)
    return ixt if quantity == "ixt" else ity


def both_quantities(layers: list[np.ndarray], mi_set: MISet, params: dict[str, dict],
                    na: dict[str, str]) -> tuple[dict[str, Cell], dict[str, Cell]]:
    """(I(X;T), I(T;Y)) per row (plane), first layer, one ``estimate`` call per applicable estimator.

    Exceptions are recorded as "error: ..." cells (shown in the table, never hidden).
    """
    torch_layers = [torch.as_tensor(h, dtype=torch.float32) for h in layers]
    ixt: dict[str, Cell] = {}
    ity: dict[str, Cell] = {}
    for kind in ESTIMATORS:
        planes = ESTIMATORS[kind]().planes
        if kind in na:
            for plane in planes:
                ixt[plane] = ity[plane] = "n/a: " + na[kind]
            continue
        try:
            result = build(kind, params).estimate(torch_layers, mi_set)
        except Exception as error:  # noqa: BLE001 - reported in the table
            for plane in planes:
                ixt[plane] = ity[plane] = f"error: {type(error).__name__}: {error}"
            continue
        for plane in planes:
            ixt[plane], ity[plane] = float(result[plane][0][0]), float(result[plane][1][0])
    return ixt, ity


def labelled_set(y: np.ndarray) -> MISet:
    """MI set with distinct inputs (x_ids = 0..N-1), labels y and no input vectors (kNN I(X;T) not computed)."""
    y = np.asarray(y, dtype=np.int64)
    return MISet(x_ids=torch.arange(len(y)), y=torch.as_tensor(y), n_classes=int(y.max()) + 1, x=None)


CONTINUOUS_T_NA = {"discrete": "continuous T: every sample is its own symbol, so the plug-in value is "
                               "H(Y) of the sample whatever T is (module docstring)"}


def _add_column(table: Table, values: dict[str, Cell]) -> None:
    for row, _ in estimator_rows():
        table.cells.setdefault(row, []).append(values[row])


def family_mixture(key: str, dist: str, n: int, seed: int, truth: float, log: Callable[[str], None]) -> Table:
    name = "Gaussian" if dist == "gauss" else f"Student-t (ν = {NU:g})"
    table = Table(key, f"({key}) I(T;Y), two-class {name} mixture, N = {n}",
                  f"Y ∈ {{0,1}} equiprobable (exactly N/2 each); T | Y has independent unit-scale {name} "
                  f"coordinates, the first shifted by ±{MU:g}. Truth: Monte Carlo over {N_MC:,} draws of "
                  "H(Y) − H(Y|T) with the exact posterior (the same for every d: coordinates 2..d carry "
                  "no information about Y). Cells: estimate (absolute error), bits.",
                  [f"d = {d}" for d in DIMS], [truth] * len(DIMS))
    alone = []
    for d in DIMS:
        t, y = sample_mixture(n, d, dist, seed, family=key if key != "a" else "a")
        params = continuous_params(t)
        _add_column(table, run_estimators([t], labelled_set(y), params, "ity", CONTINUOUS_T_NA))
        table.params.append(f"d = {d}: " + "; ".join(f"{k}: {fmt_params(params[k])}"
                                                     for k in ("binning_fixed", "binning", "kde")))
        alone.append(f"d = {d}: {singleton_fraction(t, params['binning']['bin_size']):.0%}")
        log(f"family {key} d={d} done")
    table.notes.append("Binning and the KDE bounds saturate with d: the share of samples alone in their bin "
                       "(binning's rule) is " + ", ".join(alone) + ". A sample alone in its bin determines its "
                       "label, so where that share nears 100 % the binned I(T;Y) tends to H(Y) = 1 bit whatever "
                       "the truth; the KDE bounds do the same once σ is small next to the spacing of the points.")
    return table


def singleton_fraction(t: np.ndarray, bin_size: float) -> float:
    """Share of the rows of t whose cell floor(t / bin_size) holds no other row."""
    _, inverse, counts = np.unique(np.floor(t / bin_size), axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] == 1).mean())


def family_bijection(n: int, seed: int, truth: float, base: Table, log: Callable[[str], None]) -> list[Table]:
    """Family (b): the samples of family (a) under T ↦ A·T + b and under T ↦ sinh(T)."""
    tables = []
    for transform in ("affine", "sinh"):
        what = ("T ↦ A·T + b, A = Q1·diag(s)·Q2 with random orthogonal Q1, Q2 and singular values s "
                "geometric in [0.5, 2] (A = 0.5 for d = 1), b ~ N(0, 9 I)") if transform == "affine" else \
            "T ↦ sinh(T), elementwise (strictly increasing, heavy-tailed image)"
        table = Table(f"b-{transform}", f"(b) bijection {transform}: I(T;Y) of family (a) after {transform}, N = {n}",
                      f"The samples of family (a) (same seed), transformed by {what}. I(T;Y) is unchanged: "
                      "truth as in (a). Cells: estimate (absolute error) and Δ = change against the untransformed "
                      "estimate of (a), bits.", [f"d = {d}" for d in DIMS], [truth] * len(DIMS))
        table.deltas = {}
        for i, d in enumerate(DIMS):
            t, y = sample_mixture(n, d, "gauss", seed, family="a")
            if transform == "affine":
                a, b = random_affine(d, seed)
                t = t @ a.T + b
            else:
                t = np.sinh(t)
            params = continuous_params(t)
            values = run_estimators([t], labelled_set(y), params, "ity", CONTINUOUS_T_NA)
            _add_column(table, values)
            for row, _ in estimator_rows():
                before = base.cells[row][i]
                delta = values[row] - before if isinstance(values[row], float) and isinstance(before, float) else None
                table.deltas.setdefault(row, []).append(delta)
            table.params.append(f"d = {d}: " + "; ".join(f"{k}: {fmt_params(params[k])}"
                                                         for k in ("binning_fixed", "binning", "kde")))
            log(f"family b {transform} d={d} done")
        table.notes.append("The noisy-layer estimators (kde, gaussian, lga, gae, noisy_mc) define I(T;Y) on T + ε; ε is not "
                           "transformed with T, so their target itself moves slightly under the bijection "
                           "(σ² follows the transformed data's scale, see the parameter rule).")
        tables.append(table)
    return tables


DISCRETE_CASES = [
    # (label, k, code, n_classes, flip fraction)
    ("k = 4, 1-D levels, Y = T mod 2", 4, "levels", 2, 0.0),
    ("k = 16, 1-D levels, Y = T mod 2, 1/8 flipped", 16, "levels", 2, 1 / 8),
    ("k = 16, 4-bit code, Y = T mod 4", 16, "binary", 4, 0.0),
    ("k = 64, 6-bit code, Y = T mod 2, 1/4 flipped", 64, "binary", 2, 1 / 4),
]


def discrete_case(n: int, k: int, code: str, n_classes: int, flip: float, seed: int):
    """T (n, d) codes of t = X mod k (X = sample id, n/k samples per value), labels y and the exact truths.

    Y = t mod n_classes, except for exactly round(flip · n/k) samples of every value of t whose label is
    replaced by the other class of a two-class Y. The sample is the population: plug-in = truth.
    """
    if n % k:
        raise ValueError(f"N = {n} must be a multiple of k = {k}")
    rng = np.random.default_rng([seed, FAMILY_IDS["d"], k, n_classes])
    ids = rng.permutation(n)
    t = ids % k
    y = t % n_classes
    per_value = n // k
    n_flip = round(flip * per_value)
    if n_flip:
        if n_classes != 2:
            raise ValueError("label flips need two classes")
        for value in range(k):
            members = np.flatnonzero(t == value)[:n_flip]
            y[members] = 1 - y[members]
    if code == "levels":
        layer = t[:, None].astype(np.float64)
        levels = np.arange(k, dtype=np.float64)
    else:
        bits = round(math.log2(k))
        layer = ((t[:, None] >> np.arange(bits)) & 1).astype(np.float64)
        levels = np.array([0.0, 1.0])
    p = n_flip / per_value
    ity = (math.log2(n_classes) if not n_flip else float(1.0 - binary_entropy_bits(np.array(p))))
    return layer, y, levels, math.log2(k), ity


def family_discrete(n: int, seed: int, log: Callable[[str], None]) -> Table:
    columns, truths = [], []
    for label, *_ in DISCRETE_CASES:
        columns += [f"{label}: I(X;T)", f"{label}: I(T;Y)"]
    table = Table("d", f"(d) discrete T, N = {n}",
                  "X = the sample id (N distinct, equiprobable inputs); T = X mod k, so every value of T has "
                  "exactly N/k preimages; T is given to the estimators as its level 0..k−1 (one unit) or as "
                  "its binary code (log2 k units of 0/1). Y = T mod C, and in the noisy cases exactly the stated "
                  "fraction of every value's samples has the other label. The sample is the population, so the "
                  "exact plug-in truths are closed-form: I(X;T) = log2 k, I(T;Y) = log2 C (deterministic) or "
                  "1 − h2(flip fraction). Cells: estimate (absolute error), bits.", columns, truths)
    na = {"ksg": "kNN estimators assume continuous T; here all samples of a value of T tie (distance 0), "
                 "broken only by the 1e-10 jitter, and X is a sample id (docstring: not a measurement on "
                 "discrete inputs)"}
    smallest = []
    for label, k, code, n_classes, flip in DISCRETE_CASES:
        layer, y, levels, ixt_truth, ity_truth = discrete_case(n, k, code, n_classes, flip, seed)
        params = discrete_params(levels)
        ixt, ity = both_quantities([layer], labelled_set(y), params, na)
        truths += [ixt_truth, ity_truth]
        counts = np.unique(np.column_stack([layer, y]), axis=0, return_counts=True)[1]
        smallest.append(f"{int(counts.min())} in {layer.shape[1]}-D ({label.split(':')[0]})")
        for row, _ in estimator_rows():
            table.cells.setdefault(row, []).extend([ixt[row], ity[row]])
        table.params.append(f"{label}: " + "; ".join(f"{kk}: {fmt_params(params[kk])}"
                                                     for kk in ("binning_fixed", "binning", "kde")))
        log(f"family d {label} done")
    table.notes.append("Noisy-layer estimators (kde, gaussian, lga, gae, noisy_mc) measure T + ε with σ = spacing/10: "
                       "the values of T are 10σ apart, so the noisy layer's I(X;T) and I(T;Y) equal the "
                       "discrete ones up to a Gaussian tail of about Φ(−5) ≈ 3e-7 per sample.")
    table.notes.append("lga and gae on T + ε see one Gaussian cluster of N/k samples per value of T, split by "
                       "class for I(T;Y): the smallest class-conditional cluster has " + ", ".join(smallest) +
                       " samples. A local fit of a d-dimensional covariance needs many more than k samples per "
                       "cluster; with fewer, Ĥ(Z|Y=c) is biased upwards by an amount that differs between "
                       "the classes, and I(T;Y) can come out negative (reported as computed).")
    return table


E_CASES = [
    # (label, rhos)
    ("1-D, ρ = 0.5", [0.5]),
    ("1-D, ρ = 0.9", [0.9]),
    ("1-D, ρ = 0.99", [0.99]),
    ("d = 2", list(np.linspace(0.3, 0.9, 2))),
    ("d = 5", list(np.linspace(0.3, 0.9, 5))),
    ("d = 10", list(np.linspace(0.3, 0.9, 10))),
    ("d = 20", list(np.linspace(0.3, 0.9, 20))),
]

E_NA = {
    "binning_fixed": "with N distinct inputs X is the sample id and H(T|X) = 0, so binning gives H(binned T), "
                     "not I(X;T) of a stochastic T",
    "binning": "as binning_fixed: H(binned T) with distinct inputs",
    "binning_adaptive": "as binning_fixed: H(binned T) with distinct inputs",
    "discrete": "continuous X and T: every sample its own symbol, value log2 N",
    "edge": "X enters EDGE as its sample id (ibtui's MI sets have discrete inputs): with distinct inputs it gives "
            "the entropy of T's buckets, not I(X;T) of a continuous X",
}


def family_gaussian_pairs(n: int, seed: int, log: Callable[[str], None]) -> Table:
    table = Table("e", f"(e) I(X;T), correlated Gaussians, N = {n}",
                  "X ~ N(0, I_d) and T_i = ρ_i X_i + √(1 − ρ_i²) W_i with W ~ N(0, I_d) independent of X "
                  "(independent pairs; ρ_i equally spaced in [0.3, 0.9] for d ≥ 2). Truth −½ Σ log2(1 − ρ_i²). "
                  "ksg: KSG algorithm 1 on (x, t) through `mi_set.x`. kde, gaussian, lga, gae, noisy_mc define I(X;T) on "
                  "a noisy layer f(X) + ε; the pair is exactly of that form: they get the deterministic layer "
                  "f(X)_i = ρ_i/√(1 − ρ_i²) · X_i with σ² = 1 (T rescaled per unit, which leaves I unchanged), "
                  "and draw ε themselves (kde integrates it). Cells: estimate (absolute error), bits.",
                  [label for label, _ in E_CASES], [gaussian_pair_truth_bits(r) for _, r in E_CASES])
    for i, (label, rhos) in enumerate(E_CASES):
        rhos = np.asarray(rhos)
        d = len(rhos)
        rng = np.random.default_rng([seed, FAMILY_IDS["e"], i, n])
        x = rng.standard_normal((n, d))
        t = rhos * x + np.sqrt(1 - rhos ** 2) * rng.standard_normal((n, d))
        y = np.zeros(n, dtype=np.int64)
        values: dict[str, Cell] = {}
        noisy_params = {kind: {"noise_variance": 1.0} for kind in ("kde", "gaussian")}
        noisy_params.update({"lga": {"k": 10, "noise_variance": 1.0}, "gae": {"k": 5, "noise_variance": 1.0},
                             "noisy_mc": {"noise_std": 1.0}})
        deterministic = x * (rhos / np.sqrt(1 - rhos ** 2))
        plain = labelled_set(y)
        values.update(run_estimators([deterministic], plain, noisy_params, "ixt",
                                     {**E_NA, "ksg": "computed below", "infonce": "computed below"}))
        with_x = MISet.from_arrays(x, y)
        ksg = run_estimators([t], with_x, {"ksg": {"k": 3}}, "ixt",
                             {kind: "-" for kind in ESTIMATORS if kind != "ksg"})
        values["ksg"] = ksg["ksg"]
        infonce = run_estimators([deterministic], with_x, {"infonce": {"noise_variance": 1.0}}, "ixt",
                                 {kind: "-" for kind in ESTIMATORS if kind != "infonce"})
        values["infonce"] = infonce["infonce"]
        _add_column(table, values)
        log(f"family e {label} done")
    table.params.append("ksg: k=3 on (x, t); kde, gaussian: noise_variance=1 on the layer ρ/√(1−ρ²)·X; "
                        "lga: k=10, gae: k=5, noise_variance=1 (their own seeded noise draw); noisy_mc: noise_std=1 "
                        "(one draw of centres: the layer is deterministic); infonce: noise_variance=1 on that layer, X = the "
                        "input vectors.")
    return table


def family_sample_size(sizes: list[int], seed: int, truth: float, log: Callable[[str], None]) -> Table:
    d = 5
    table = Table("f", f"(f) sample-size dependence: family (a) at d = {d}",
                  "The Gaussian mixture of (a), d = 5, drawn afresh for every N (seeded). Cells: estimate "
                  "(absolute error), bits; read across a row for the bias trend.",
                  [f"N = {n}" for n in sizes], [truth] * len(sizes), in_headline=False)
    for n in sizes:
        t, y = sample_mixture(n, d, "gauss", seed, family="f")
        params = continuous_params(t)
        _add_column(table, run_estimators([t], labelled_set(y), params, "ity", CONTINUOUS_T_NA))
        table.params.append(f"N = {n}: " + "; ".join(f"{k}: {fmt_params(params[k])}"
                                                     for k in ("binning_fixed", "binning", "kde")))
        log(f"family f N={n} done")
    return table


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


TIMING_SIZES = (4096, 10_000)


def timing_layers(n: int) -> tuple[list[torch.Tensor], MISet]:
    """The untrained 12-bit tanh network's 6 layers on n inputs, and their MI set.

    n = 4096: the 12-bit task's inputs and labels. Otherwise n distinct inputs drawn from
    N(0, I_12) (seeded), labelled by the sign of their first coordinate (the task has only 4096).
    """
    from ibtui.engine.data import load_dataset
    from ibtui.engine.model import MLP

    if n == 4096:
        data = load_dataset("12bit")
        x, y = np.asarray(data.x, dtype=np.float32), np.asarray(data.y)
    else:
        rng = np.random.default_rng([0, n])
        x = rng.standard_normal((n, 12)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
    torch.manual_seed(0)
    model = MLP(12, [10, 7, 5, 4, 3], 2)
    with torch.no_grad():
        layers = model.forward_layers(torch.as_tensor(x))
    return layers, MISet.from_arrays(x, y)


def time_estimators(repeats: int, log: Callable[[str], None],
                    sizes: tuple[int, ...] = TIMING_SIZES) -> list[tuple[str, str, list[float]]]:
    """(kind, parameters, seconds per layer at each of ``sizes``) per estimator, default parameters.

    Median of ``repeats`` ``estimate`` calls after one warm-up at the first size (the warm-up fills
    caches such as GAE's bias constant); one call at the others.
    """
    per_size = [timing_layers(n) for n in sizes]
    # beyond the first size, the first layer alone: an O(N³) estimator (renyi) would take half an
    # hour on the 6 layers at N = 10,000; per-layer seconds are comparable either way
    per_size = per_size[:1] + [(layers[:1], mi_set) for layers, mi_set in per_size[1:]]
    rows = []
    for kind, cls in ESTIMATORS.items():
        estimator = cls()
        seconds = []
        for index, (layers, mi_set) in enumerate(per_size):
            if index == 0:
                estimator.estimate(layers, mi_set)
            times = []
            for _ in range(repeats if index == 0 else 1):
                start = time.perf_counter()
                estimator.estimate(layers, mi_set)
                times.append(time.perf_counter() - start)
            seconds.append(statistics.median(times) / len(layers))
        rows.append((kind, fmt_params(dict(vars(estimator))), seconds))
        log(f"timing {kind}: " + ", ".join(f"N={n}: {t:.3f} s/layer" for n, t in zip(sizes, seconds)))
    return rows


# --------------------------------------------------------------------------------------------
# Driver and rendering
# --------------------------------------------------------------------------------------------


def run_benchmark(n: int = 4096, sizes: tuple[int, ...] = (256, 1024, 4096, 10_000), seed: int = 0,
                  timing_repeats: int = 3, n_mc: int = N_MC, log: Callable[[str], None] = lambda s: None) -> Report:
    """Compute every table (and the timing unless timing_repeats = 0); returns a ``Report``."""
    start = time.perf_counter()
    truth_gauss = mixture_truth_bits(dist="gauss", n_mc=n_mc, seed=seed)
    truth_t = mixture_truth_bits(dist="t", n_mc=n_mc, seed=seed)
    log(f"truths: gauss {truth_gauss:.4f}, t {truth_t:.4f}")
    table_a = family_mixture("a", "gauss", n, seed, truth_gauss, log)
    # The noisy layer's own truth for (a): T + ε is again a Gaussian mixture, with means ±MU/√(1+σ²) in units.
    gaps = []
    for d, line in zip(DIMS, table_a.params):
        t, _ = sample_mixture(n, d, "gauss", seed, family="a")
        sigma2 = continuous_params(t)["kde"]["noise_variance"]
        noisy = mixture_truth_bits(mu=MU / math.sqrt(1 + sigma2), dist="gauss", n_mc=n_mc, seed=seed)
        gaps.append(f"d = {d}: σ² = {sigma2:.4g}, I(T+ε;Y) = {noisy:.4f} (truth − that = {truth_gauss - noisy:+.4f})")
    table_a.notes.append("kde, gaussian, lga, gae and noisy_mc estimate I(T+ε;Y) of the noisy layer, which is slightly "
                         "below I(T;Y); its exact value for the σ² used (same Monte Carlo): " + "; ".join(gaps) + ".")
    tables = [table_a]
    tables += family_bijection(n, seed, truth_gauss, table_a, log)
    tables.append(family_mixture("c", "t", n, seed, truth_t, log))
    tables.append(family_discrete(n, seed, log))
    tables.append(family_gaussian_pairs(n, seed, log))
    tables.append(family_sample_size(list(sizes), seed, truth_gauss, log))
    timing = time_estimators(timing_repeats, log) if timing_repeats > 0 else []
    settings = {"n": n, "sizes": list(sizes), "seed": seed, "timing_repeats": timing_repeats, "n_mc": n_mc}
    return Report(settings, tables, timing, time.perf_counter() - start)


def _cell(value: Cell, truth: float, delta: float | None = None) -> str:
    if isinstance(value, str):
        return "n/a" if value.startswith("n/a") else "error"
    if not math.isfinite(value):
        return "nan"
    text = f"{value:.3f} ({abs(value - truth):.3f})"
    if delta is not None:
        text += f" Δ{delta:+.3f}"
    return text


def render_table(table: Table) -> list[str]:
    lines = [f"### {table.title}", "", table.text, ""]
    lines.append("| estimator | " + " | ".join(table.columns) + " |")
    lines.append("|---|" + "---|" * len(table.columns))
    lines.append("| **truth** | " + " | ".join(f"**{t:.3f}**" for t in table.truth) + " |")
    reasons: dict[str, str] = {}
    for row, _ in estimator_rows():
        cells = table.cells[row]
        deltas = (table.deltas or {}).get(row, [None] * len(cells))
        lines.append(f"| {row} | " + " | ".join(_cell(v, t, dl) for v, t, dl in zip(cells, table.truth, deltas)) + " |")
        for v in cells:
            if isinstance(v, str):
                reasons.setdefault(row, v)
    lines.append("")
    for row, reason in reasons.items():
        lines.append(f"- {row}: {reason}")
    for note in table.notes:
        lines.append(f"- {note}")
    if table.params:
        lines.append("- Data-dependent parameters: " + " | ".join(table.params))
    lines.append("")
    return lines


def render_markdown(report: Report, command: str) -> str:
    s = report.settings
    rows = estimator_rows()
    headline = [t for t in report.tables if t.in_headline]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, torch {torch.__version__} (CPU, {torch.get_num_threads()} threads)")
    lines = [
        "# Estimator accuracy against analytic ground truth",
        "",
        f"**Generated by `{command}`** on {now}, {machine}, in {report.seconds:.0f} s. Do not edit by hand: "
        "every number below is recomputed by `benchmarks/estimator_accuracy.py` (`--quick` for a smaller run).",
        "",
        f"Estimator sources: `sha256:{sources_digest()}` (`ibtui/estimators/*.py`; the test suite fails when "
        "the installed estimators differ, so regenerate this document after changing them).",
        "",
        ("**This is a `--quick` run** (smaller N, no N = 10,000 in (f)); the full run is "
         "`python benchmarks/estimator_accuracy.py`." if s.get("quick") else
         "Full run (not `--quick`)."),
        "",
        "What is measured: each registered estimator (`ibtui.estimators.ESTIMATORS`, called through its public "
        "`estimate(layers, mi_set)` on a single layer) against the analytic value of the quantity it estimates, "
        "in **bits**. Cells are `estimate (absolute error)`; `n/a` where the estimator's definition does not "
        "apply (the reason is listed under the table). kde has two planes, `kde_upper` and `kde_lower`, shown "
        "as two rows.",
        "",
        f"Sample size N = {s['n']} per case in (a)–(e); (f) uses N = {', '.join(str(v) for v in s['sizes'])}. "
        f"Monte-Carlo truths use {s['n_mc']:,} draws (standard error ≈ 3e-4 bits). Seed {s['seed']}: every "
        "sample is drawn from `numpy.random.default_rng([seed, family, case, N])`; the estimators' own seeds "
        "(lga/gae noise draw, ksg jitter) are their defaults.",
        "",
        "Parameter rules (justification: each estimator's resolution is tied to the data's scale, so that the "
        "comparison measures the method, not an arbitrary unit): s = median over units of IQR/1.349 (the "
        "standard deviation of a Gaussian unit, robust to sinh's tails). binning: bin_size = s/4; "
        "binning_fixed: 30 edges from the 0.5 % to the 99.5 % quantile of the pooled activations "
        "(≈ 29 intervals, as IDNNs' linspace(−1, 1, 30) on tanh); binning_adaptive: 30 bins (the paper's); "
        "kde, gaussian, lga, gae, noisy_mc: noise variance σ² = (s/10)², small next to the class separation so that "
        "the noisy layer's truth stays within about 0.01 bits of the noiseless one (the exact gap is listed under (a)); "
        "ksg k = 3, lga k = 10, gae k = 5 (their defaults); renyi: its defaults (α = 1.01, Silverman's width) "
        "— it estimates the matrix-based Rényi quantity, not Shannon MI, so its error column measures how far that "
        "quantity lies from the Shannon truth; edge: the reference's defaults. Discrete T (d): bins aligned on the levels "
        "(bin_size = spacing/2, fixed edges midway between levels), σ = spacing/10 (renyi: kernel width spacing/10, a delta kernel). The per-case values are "
        "listed under each table.",
        "",
        "## Headline: mean absolute error (bits)",
        "",
        "Mean over the cells of tables (a)–(e) where the estimator applies (family (b) counts its two "
        "transforms; (f) is left out, it repeats (a) at other N). `cases` counts those cells.",
        "",
        "| estimator | " + " | ".join(t.key for t in headline) + " | **all** | cases |",
        "|---|" + "---|" * (len(headline) + 2),
    ]
    for row, _ in rows:
        per = [t.errors(row) for t in headline]
        flat = [e for errs in per for e in errs]
        cells = [f"{np.mean(errs):.3f}" if errs else "n/a" for errs in per]
        total = f"**{np.mean(flat):.3f}**" if flat else "n/a"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {total} | {len(flat)} |")
    lines += ["", "## Families", ""]
    for table in report.tables:
        lines += render_table(table)
    if report.timing:
        lines += [
            "## Time per layer-epoch",
            "",
            "Seconds per layer of one `estimate(layers, mi_set)` call, default parameters, on the 6 layers "
            "(widths 10, 7, 5, 4, 3, 2) of the untrained 12-bit tanh network (`MLP(12, [10, 7, 5, 4, 3], 2)` "
            "after `torch.manual_seed(0)`), with `MISet.from_arrays(x, y)`, so ksg computes its x-path I(X;T) "
            "too. N = 4096: the 12-bit task's inputs, median of "
            f"{s['timing_repeats']} calls after one warm-up; N = 10000: distinct N(0, I₁₂) inputs labelled by "
            "the sign of their first coordinate, one call on the first layer (width 10) alone. On the machine above.",
            "",
            "| estimator | parameters | " + " | ".join(f"s per layer, N = {n}" for n in TIMING_SIZES) + " |",
            "|---|---|" + "---|" * len(TIMING_SIZES),
        ]
        for kind, params, seconds in report.timing:
            lines.append(f"| {kind} | {params} | " + " | ".join(f"{t:.4f}" for t in seconds) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1024, (f) without N = 10,000")
    parser.add_argument("--out", default="docs/estimators.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    n = 1024 if args.quick else 4096
    sizes = (256, 1024, 4096) if args.quick else (256, 1024, 4096, 10_000)
    begin = time.perf_counter()
    report = run_benchmark(n=n, sizes=sizes, seed=args.seed,
                           log=lambda m: print(f"[{time.perf_counter() - begin:7.1f} s] {m}", flush=True))
    report.settings["quick"] = args.quick
    command = "python benchmarks/estimator_accuracy.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(report, command), encoding="utf-8")
    print(f"wrote {out} in {report.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
