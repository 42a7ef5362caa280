"""k-nearest-neighbour estimators: KSG (Kraskov, Stögbauer & Grassberger 2004) and Ross (2014).

I(T;Y), labels discrete — Ross 2014 ("Mutual information between discrete and continuous
data sets", PLoS ONE 9:e87357), the KSG construction for a discrete variable: for sample i
with label c, N_c samples share its label; d_i is the max-norm distance in T-space to its
k_i-th nearest neighbour among those N_c samples, k_i = min(k, N_c − 1); m_i counts the
samples j ≠ i of the whole set with ‖t_j − t_i‖∞ ≤ d_i (the k_i-th neighbour included). Then

    I(T;Y) = ψ(N) − ⟨ψ(N_c)⟩ + ⟨ψ(k_i)⟩ − ⟨ψ(m_i)⟩            (nats; ψ = digamma)

Samples whose label occurs only once cannot have a same-label neighbour and are left out
(N, N_c and m_i are then taken over the remaining samples), as scikit-learn does.

I(X;T), two definitions, chosen by what the MI set carries:
- ``mi_set.x`` present (the (N, D) input vectors): KSG algorithm 1 on the pair (x, t) with
  the max-norm in each space and in the joint space z = (x, t): ε_i is the distance from z_i to
  its k-th nearest neighbour, n_x(i) and n_t(i) count the samples j ≠ i strictly within ε_i in
  x-space and in t-space, and

      I(X;T) = ψ(k) + ψ(N) − ⟨ψ(n_x + 1) + ψ(n_t + 1)⟩            (nats)

  This treats X as a continuous vector and is meant for continuous inputs. For inputs on a
  lattice (the 12-bit task's 0/1 patterns: every pair of distinct inputs is at max-norm
  distance exactly 1) almost every sample lies within ε_i in x-space, n_x ≈ N − 1, and the
  estimate collapses toward 0 whatever T is (at initialization of the 12-bit tanh network:
  0.70, 0.05, 0.01, 0, 0, 0 bits for the six layers, where binning gives 12 ... 0.9): it is
  not a measurement of I(X;T) there. (For a deterministic T of a discrete X the true value is
  H(T), which binning/``Discrete`` or a noise model such as KDE address.)
- ``mi_set.x`` absent (None or no such attribute): X is the input id ``mi_set.x_ids`` taken as a
  discrete variable, and I(X;T) is Ross's estimator above with the ids as labels. It needs
  repeated inputs (several samples per id, e.g. noisy or pooled activations); with every id
  seen once there is no same-input neighbour, the value is undefined and NaN is returned.

Ties and duplicates: kNN estimators assume continuous variables (no two samples at distance
0). Before any distance is computed, every continuous coordinate (T's units, and x's) is
converted to float64 and gets a tiny deterministic jitter, as scikit-learn's
``mutual_info_*`` do: ``noise · max(1, mean|column|) · N(0, 1)`` with fixed seeds (0 for T, 1 for
x; the generator runs on the CPU, so results do not depend on the device's RNG). With the
default ``noise = 1e-10`` this breaks exact ties (duplicate rows, saturated units) in a
reproducible way while moving no real distance noticeably (float32 activations are only
resolved to ~1e-7 relative anyway);
``noise = 0`` disables it (then duplicates are handled by the strict/non-strict counts as
written above, which is usually a bad idea). Labels and ids get no jitter.

Assumptions: finite activations and inputs (NaN/inf raise ``ValueError``); N > k samples
for the x path (else ``ValueError``; Ross's estimator adapts k_i to small classes).
Per-coordinate scales matter (the max-norm mixes units): the estimate changes, within its
noise, under rescaling of one unit or of T against x; it is invariant only up to estimation
noise to a smooth strictly monotone map of a one-dimensional T (the true MI is exactly).

Bias: nearly unbiased for weak dependence (independent variables give ≈ 0, and values may
be slightly negative: they are not clamped, so averages stay unbiased); for strong
dependence KSG and Ross underestimate (the estimate saturates near ln(N/k) nats, and
high MI needs exponentially many samples, Gao et al. 2015); in many dimensions (wide layers)
the underestimate is large. Ross's I(T;Y) ≤ ψ(N) − ⟨ψ(N_c)⟩ ≈ H(Y) always (m_i ≥ k_i); the
x-path I(X;T) is not bounded by a plug-in H(X).

Parameters: ``k`` neighbours (default 3, Kraskov's recommendation is 2–4 for low bias),
``noise`` relative jitter (default 1e-10), ``chunk_size`` rows of the distance matrix held at
once (default 256: rows that stay in the CPU's cache ran 3× faster than 2048 on a 2-core machine;
raise it on a GPU).
Cost: O(N² (D + Σ_l d_l)) per call for the x path (exact max-norm distances
``torch.cdist(p=inf)`` in row blocks; each block of x's distances is computed once and shared
by all layers, each block of a layer's distances by I(X;T) and I(T;Y)), O(N² Σ_l d_l) for the
id path, plus O(N²) comparisons, top-k and digammas per layer. Peak memory about
5 · chunk_size · N float64 values (40 · chunk_size · N bytes: 42 MB at N = 4096, 100 MB at
N = 10,000 with the default chunk_size). No Python loop over
samples; runs on the device of the activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import Estimator, check_int, check_samples, LN2, MISet, Plane, require_finite

_INF = float("inf")


def jitter(z: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """float64 copy of z (N, ...) as (N, D) plus noise · max(1, mean|column|) · N(0, 1).

    The normal draws come from a CPU generator seeded with ``seed`` (device-independent).
    """
    z = z.reshape(z.shape[0], -1).to(torch.float64)
    if noise == 0 or z.numel() == 0:
        return z
    generator = torch.Generator().manual_seed(seed)
    scale = noise * z.abs().mean(dim=0).clamp(min=1.0)
    return z + scale * torch.randn(z.shape, generator=generator, dtype=torch.float64).to(z.device)


def _digamma(values: torch.Tensor) -> torch.Tensor:
    return torch.special.digamma(values.to(torch.float64))


def _psi(value: float) -> float:
    return float(torch.special.digamma(torch.tensor(float(value), dtype=torch.float64)))


def _distances(block: torch.Tensor, points: torch.Tensor, start: int) -> torch.Tensor:
    """Max-norm distances from rows ``block`` (= points[start:start+len(block)]) to all points; self = inf."""
    dist = torch.cdist(block, points, p=_INF)
    rows = torch.arange(block.shape[0], device=block.device)
    dist[rows, start + rows] = _INF
    return dist


class _KSGSums:
    """Running sums of KSG algorithm 1 for I(A;B), fed one row block of both distance matrices at a time."""

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        if n <= k:
            raise ValueError(f"KSG needs more than k={k} samples; got {n}")
        self.n, self.k = n, k
        self.total = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, da: torch.Tensor, db: torch.Tensor) -> None:
        eps = torch.maximum(da, db).topk(self.k, dim=1, largest=False).values[:, -1:]
        n_a = torch.count_nonzero(da < eps, dim=1)
        n_b = torch.count_nonzero(db < eps, dim=1)
        self.total += (_digamma(n_a + 1) + _digamma(n_b + 1)).sum()

    def nats(self) -> float:
        return _psi(self.k) + _psi(self.n) - float(self.total) / self.n


class _RossSums:
    """Running sums of Ross's estimator for I(T;L), fed one row block of T's distance matrix at a time.

    Samples whose label occurs once are masked out (rows skipped, columns ignored).
    """

    def __init__(self, labels: torch.Tensor, k: int) -> None:
        _, self.inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        self.n_same = counts[self.inverse]
        self.keep = self.n_same >= 2
        self.all_kept = bool(self.keep.all())
        self.n = int(self.keep.sum())
        self.k_own = torch.minimum(self.n_same - 1, torch.full_like(self.n_same, k)).clamp(min=1)
        self.k_max = max(1, int(self.k_own[self.keep].max())) if self.n else 1
        self.total = torch.zeros((), dtype=torch.float64, device=labels.device)

    def add(self, dist: torch.Tensor, start: int, stop: int) -> None:
        if self.n < 2:
            return
        rows = slice(start, stop)
        other = self.inverse[rows, None] != self.inverse[None, :]
        if not self.all_kept:
            dist = dist.masked_fill(~self.keep[None, :], _INF)  # dropped samples are absent as neighbours
        within = dist.masked_fill(other, _INF)
        radius = within.topk(self.k_max, dim=1, largest=False).values.gather(1, (self.k_own[rows] - 1)[:, None])
        m = torch.count_nonzero(dist <= radius, dim=1)
        terms = _digamma(self.n_same[rows]) - _digamma(self.k_own[rows]) + _digamma(m)
        self.total += terms[self.keep[rows]].sum() if not self.all_kept else terms.sum()

    def nats(self) -> float:
        return math.nan if self.n < 2 else _psi(self.n) - float(self.total) / self.n


def ksg_mi_nats(a: torch.Tensor, b: torch.Tensor, k: int, chunk_size: int) -> float:
    """KSG algorithm 1 estimate of I(A;B) in nats for float64 samples a (N, da), b (N, db)."""
    sums = _KSGSums(a.shape[0], k, a.device)
    for start in range(0, a.shape[0], chunk_size):
        stop = min(a.shape[0], start + chunk_size)
        sums.add(_distances(a[start:stop], a, start), _distances(b[start:stop], b, start))
    return sums.nats()


def mixed_mi_nats(t: torch.Tensor, labels: torch.Tensor, k: int, chunk_size: int) -> float:
    """Ross 2014 estimate of I(T;L) in nats for continuous float64 t (N, d) and discrete labels (N,).

    Samples whose label occurs once are left out; NaN if fewer than 2 samples remain.
    """
    sums = _RossSums(labels, k)
    for start in range(0, t.shape[0], chunk_size):
        stop = min(t.shape[0], start + chunk_size)
        sums.add(_distances(t[start:stop], t, start), start, stop)
    return sums.nats()


def ksg_plane_nats(layers: Sequence[torch.Tensor], x: torch.Tensor | None, x_ids: torch.Tensor, y: torch.Tensor,
                   k: int, chunk_size: int) -> tuple[list[float], list[float]]:
    """(I(X;T), I(T;Y)) in nats per layer for jittered float64 layers (N, d_l) and inputs x (N, D) or None.

    One pass over row blocks: each block of x's distances is computed once for all layers, and
    each block of a layer's distances serves both I(X;T) and I(T;Y).
    """
    n = layers[0].shape[0]
    device = layers[0].device
    ity_sums = [_RossSums(y, k) for _ in layers]
    ixt_sums = [_KSGSums(n, k, device) if x is not None else _RossSums(x_ids, k) for _ in layers]
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        dx = None if x is None else _distances(x[start:stop], x, start)
        for t, for_ixt, for_ity in zip(layers, ixt_sums, ity_sums):
            dt = _distances(t[start:stop], t, start)
            if dx is not None:
                for_ixt.add(dx, dt)
            else:
                for_ixt.add(dt, start, stop)
            for_ity.add(dt, start, stop)
    return [s.nats() for s in ixt_sums], [s.nats() for s in ity_sums]



@dataclass(frozen=True)
class KSG(Estimator):
    """kNN estimators in bits: KSG algorithm 1 for I(X;T) on (x, T), Ross 2014 for I(T;Y) (see module docstring).

    I(X;T) uses ``mi_set.x`` when the MI set has it, else Ross's estimator on the input ids
    (NaN when no input is repeated).
    """

    k: int = 3
    noise: float = 1e-10
    chunk_size: int = 256

    kind: ClassVar[str] = "ksg"
    summary: ClassVar[str] = ("Kraskov-Stögbauer-Grassberger kNN (alg. 1) for I(X;T) on inputs x, "
                              "Ross 2014 kNN for I(T;Y); k neighbours")

    def validate(self) -> None:
        check_int("estimators.ksg.k", self.k, 1)
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ParameterError(f"estimators.ksg.noise must be a finite number >= 0; got {self.noise}")
        check_int("estimators.ksg.chunk_size", self.chunk_size, 1)

    def validate_for(self, mi_set: MISet) -> None:
        check_samples("estimators.ksg.k", self.k, mi_set.n)

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "KSG")
        x = getattr(mi_set, "x", None)
        if x is not None:
            if not bool(torch.isfinite(x).all()):
                raise ValueError("mi_set.x has NaN/inf inputs; KSG needs finite values")
            x = jitter(x, self.noise, seed=1)
        if not layers:
            return {self.kind: (np.zeros(0), np.zeros(0))}
        device = layers[0].device
        ts = [jitter(h.to(device), self.noise, seed=0) for h in layers]
        if x is not None:
            x = x.to(device)
        ixt, ity = ksg_plane_nats(ts, x, mi_set.x_ids.to(device), mi_set.y.to(device), self.k, self.chunk_size)
        return {self.kind: (np.array(ixt, dtype=np.float64) / LN2, np.array(ity, dtype=np.float64) / LN2)}
