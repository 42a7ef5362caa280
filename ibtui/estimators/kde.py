"""Kernel (Kolchinsky & Tracey) bounds on the MI of a noisy layer, as in Saxe et al.'s ibsgd.

The layer T is seen through Gaussian noise of variance σ² per unit, T+ε, and the N samples
as the equiprobable inputs of a Gaussian mixture. With D_ij = ‖h_i − h_j‖² and kernel
variance v (v = σ² for the KL upper bound, v = 4σ² for the Bhattacharyya lower bound):

    I(X;T) = −mean_i ln[(1/N) Σ_j exp(−D_ij / 2v)]                  (nats)
    I(T;Y) = mean_i ln[(1/N_c) Σ_{j: y_j=c} exp(−D_ij / 2v)] − (same over all j),  c = y_i

The noise entropy H(T+ε|X) = (d/2)(ln 2πσ² + 1) cancels in I(X;T); in I(T;Y) the
constants cancel because Σ_c p(c) = 1, p(c) = N_c / N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from ibtui.errors import UserError
from ibtui.estimators.base import Estimator, LN2, MISet, Plane, require_finite


_EXPONENT_FLOOR = -170.0
"""Kernel exponents −D_ij / 2v below this are raised to it before exp: such terms (< 1.5e−74, or
their 4th powers < 1e−295) change no row sum, which is >= 1, in float64, and exp (and the squares
below) then never produce subnormals or underflow, which is several times slower."""


def _kernel_plan(variances: Sequence[float]) -> list[tuple[int, int | None]]:
    """(k, source) per variance, in computing order: source None computes exp(−D / 2v_k); source j
    (with v_j = 4 v_k) takes exp(−D / 8v_k)⁴ = (exp(−D / 2v_j)²)², two products instead of an exp."""
    plan, done = [], {}
    for k in sorted(range(len(variances)), key=lambda k: -variances[k]):
        source = done.get(4.0 * variances[k])
        plan.append((k, source))
        done.setdefault(variances[k], k)
    return plan


def kde_mi_bits(h: torch.Tensor, y: torch.Tensor, n_classes: int, variances: Sequence[float],
                chunk_size: int) -> torch.Tensor:
    """(I(X;T), I(T;Y)) in bits for each kernel variance: a float64 tensor (len(variances), 2).

    The samples are first ordered by class (the result does not depend on their order), so the
    kernel sums over a class are sums over a contiguous range of columns. The kernel matrix is
    symmetric: rows are processed ``chunk_size`` at a time against the columns from the chunk's
    first row on, and each block adds to the row sums of its rows and, for the columns right of
    the chunk, to their sums too (the transposed contribution): half the exps of the full matrix.
    The exponent block −D_ij / 2v comes from one matrix product of augmented rows
    [h_i, −‖h_i‖²/2, 1]·[h_j, 1, −‖h_j‖²/2] / v, clamped to [−170, 0] (``_EXPONENT_FLOOR``);
    for a variance pair (v, 4v), as KDE's bounds, exp is taken once and the other kernel is its
    fourth power. Peak memory is about len(variances) · (chunk_size + n_classes) · N float64
    values (the kernel blocks and the per-class kernel sums).
    The diagonal exponent is set to exactly 0, so exp(0) = 1 is in every row sum (over all j,
    and over the row's own class): no row sum underflows to 0.
    """
    n = h.shape[0]
    order = torch.argsort(y, stable=True)
    h, y = h.to(torch.float64)[order], y[order]
    sizes = torch.bincount(y, minlength=n_classes)
    ends = torch.cumsum(sizes, dim=0).tolist()
    spans = [(c, end - size, end) for c, (size, end) in enumerate(zip(sizes.tolist(), ends)) if size > 0]
    half_sq = 0.5 * (h * h).sum(dim=1, keepdim=True)
    ones = torch.ones_like(half_sq)
    left = torch.cat([h, -half_sq, ones], dim=1)
    right_t = torch.cat([h, ones, -half_sq], dim=1).T  # left_i · right_j = −D_ij / 2
    plan = _kernel_plan(variances)
    sums = torch.zeros(len(variances), n_classes, n, dtype=torch.float64, device=h.device)
    # One reused buffer per variance (fresh allocations of this size cost page faults every chunk).
    buffers = torch.empty(len(variances), min(chunk_size, n) * n, dtype=torch.float64, device=h.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.arange(stop - start, device=h.device)
        kernels = buffers[:, :(stop - start) * (n - start)].view(len(variances), stop - start, n - start)
        for k, source in plan:
            kernel = kernels[k]
            if source is None:
                torch.mm(left[start:stop] / variances[k], right_t[:, start:], out=kernel)
                kernel.clamp_(_EXPONENT_FLOOR, 0.0)[rows, rows] = 0.0
                kernel.exp_()
            else:
                torch.mul(kernels[source], kernels[source], out=kernel).square_()
            for c, low, high in spans:  # own-class and (summed later) all-sample kernel sums
                if high > start:
                    sums[k, c, start:stop] += kernel[:, max(low, start) - start:high - start].sum(dim=1)
                if stop < n and low < stop and high > start:  # the transposed block, right of the chunk
                    sums[k, c, stop:] += kernel[max(low, start) - start:min(high, stop) - start,
                                                stop - start:].sum(dim=0)
    log_all = (sums.sum(dim=1) / n).log().sum(dim=1)
    own = sums.gather(1, y[None, None, :].expand(len(variances), 1, n))[:, 0]
    log_own = (own / sizes[y].to(torch.float64)).log().sum(dim=1)
    return torch.stack([-log_all, log_own - log_all], dim=1) / (n * LN2)


@dataclass(frozen=True)
class KDE(Estimator):
    """Kolchinsky & Tracey KDE bounds (ibsgd), in bits; planes "kde_upper" and "kde_lower".

    ``noise_variance`` is σ² of the Gaussian noise added to every unit. The two planes'
    I(X;T) bracket the true I(X;T+ε) of the noisy layer (X = sample index; with distinct,
    deterministic inputs that is the input); their I(T;Y), differences of two bounds, are
    not bracketed in general. Labels enter through ``mi_set.y``; ``mi_set.x_ids`` is not
    used. Computed in float64 on the activations' device; activations must be finite.
    A sample alone in its class has an own-class kernel mean of exactly 1; N = 1 gives 0.
    """

    noise_variance: float = 1e-3
    chunk_size: int = 256

    kind: ClassVar[str] = "kde"
    summary: ClassVar[str] = "Kolchinsky-Tracey KDE upper/lower bounds on the noisy layer (ibsgd), noise variance σ²"

    @property
    def planes(self) -> tuple[str, ...]:
        return ("kde_upper", "kde_lower")

    def validate(self) -> None:
        if not (math.isfinite(self.noise_variance) and self.noise_variance > 0):
            raise UserError(f"estimators.kde.noise_variance must be a finite number > 0; got {self.noise_variance}")
        if self.chunk_size < 1:
            raise UserError(f"estimators.kde.chunk_size must be >= 1; got {self.chunk_size}")

    @torch.no_grad()
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "KDE")
        variances = (self.noise_variance, 4.0 * self.noise_variance)  # upper (KL), lower (Bhattacharyya)
        mi = np.stack([kde_mi_bits(h, mi_set.y, mi_set.n_classes, variances, self.chunk_size).cpu().numpy()
                       for h in layers])  # (L, bound, [ixt, ity])
        return {plane: (mi[:, k, 0].copy(), mi[:, k, 1].copy()) for k, plane in enumerate(self.planes)}
