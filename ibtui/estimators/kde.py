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
import threading
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import Estimator, check_int, LN2, MISet, Plane, require_finite


_EXPONENT_FLOORS = {"float64": -245.0, "float32": -126.0}  # by dtype name
"""Base-2 kernel exponents −D_ij / (2v ln 2) below these are raised to them before exp2: such terms
(< 1.8e−74 in float64, < 1.2e−38, float32's smallest normal, in float32) change no row sum, which
is >= 1, at that precision, and exp2 then never produces subnormals or underflows, which is several
(float32: tens of) times slower. exp2 rather than exp: torch's exp2 is 2.5–4× faster on CPU."""

PRECISIONS = ("float64", "float32")

BLOCK_BYTES = 8 << 20
"""On the CPU, the kernel blocks of one call take at most this much (fewer rows per chunk than
``chunk_size`` when needed): blocks that stay in the CPU's cache are faster, most of all when several members
are estimated side by side (measured on a 2-core, 32 MB L3 machine: float64 with 256-row blocks,
16 MB, two members at once were 18% slower than one after another; with 128-row blocks, 8% faster)."""


_WORKSPACES = threading.local()


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch buffer of ``numel`` values, reused across calls (grown when too small), one per
    thread. A fresh CPU allocation of this size (megabytes) is fresh pages from the OS every time,
    and their first-touch page faults cost about as much as the kernel's arithmetic."""
    buffers = _WORKSPACES.__dict__.setdefault("buffers", {})
    key = (str(device), dtype)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = buffers[key] = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel]


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
                chunk_size: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(I(X;T), I(T;Y)) in bits for each kernel variance: a float64 tensor (len(variances), 2).

    The samples are first ordered by class (the result does not depend on their order), so the
    kernel sums over a class are sums over a contiguous range of columns, and centred (distances
    do not depend on the origin; smaller norms lose less to rounding below). The kernel matrix is
    symmetric: rows are processed ``chunk_size`` at a time against the columns from the chunk's
    first row on, and each block adds to the row sums of its rows and, for the columns right of
    the chunk, to their sums too (the transposed contribution): half the exp2s of the full matrix.
    The exponent block −D_ij / 2v, in base 2, comes from one matrix product of augmented rows
    [h_i, −‖h_i‖²/2, 1]·[h_j, 1, −‖h_j‖²/2] / (v ln 2), clamped to [floor, 0] (``_EXPONENT_FLOORS``);
    for a variance pair (v, 4v), as KDE's bounds, exp2 is taken once and the other kernel is its
    fourth power. Peak memory is about len(variances) · chunk_size · N values of ``dtype`` (the
    kernel blocks; at most ``BLOCK_BYTES``, with fewer rows per chunk if need be) plus float64
    per-class sums.
    The diagonal exponent is set to exactly 0, so exp(0) = 1 is in every row sum (over all j,
    and over the row's own class): no row sum underflows to 0.

    ``dtype`` is the precision of the kernel blocks (block sums are accumulated in float64).
    float32 is about 1.5× faster on CPU; the product's rounding (relative 6e−8 of ‖h‖²/2v) then
    perturbs near kernels by ~1e−4, which moves the bits by ~1e−5 (ibsgd itself computes in float32).
    """
    dtype = torch.float64 if dtype is None else dtype
    n = h.shape[0]
    order = torch.argsort(y, stable=True)
    h, y = h.to(torch.float64)[order], y[order]
    h = h - h.mean(dim=0)
    sizes = torch.bincount(y, minlength=n_classes)
    ends = torch.cumsum(sizes, dim=0).tolist()
    spans = [(c, end - size, end) for c, (size, end) in enumerate(zip(sizes.tolist(), ends)) if size > 0]
    half_sq = 0.5 * (h * h).sum(dim=1, keepdim=True)
    ones = torch.ones_like(half_sq)
    columns = torch.cat([h, ones, -half_sq], dim=1).to(dtype)  # (N, d + 2): row j = [h_j, 1, −‖h_j‖²/2]
    rows_t = torch.cat([h, -half_sq, ones], dim=1).T  # (d + 2, N): column i = [h_i, −‖h_i‖²/2, 1]; product −D_ij/2
    floor = _EXPONENT_FLOORS[str(dtype).removeprefix("torch.")]
    plan = _kernel_plan(variances)
    if h.device.type == "cpu":
        itemsize = torch.finfo(dtype).bits // 8
        chunk_size = max(1, min(chunk_size, BLOCK_BYTES // (len(variances) * max(n, 1) * itemsize)))
    sums = torch.zeros(len(variances), n_classes, n, dtype=torch.float64, device=h.device)
    # The kernel blocks, reused across chunks and calls (see _workspace). A block is stored transposed,
    # blocks[k, j − start, i − start] for the chunk's rows i and the columns j >= start: the long side
    # first makes the thin matrix product several times faster.
    buffers = _workspace(len(variances) * min(chunk_size, n) * n, dtype, h.device).view(len(variances), -1)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        width = stop - start
        diagonal = torch.arange(width, device=h.device)
        blocks = buffers[:, :(n - start) * width].view(len(variances), n - start, width)
        for k, source in plan:
            block = blocks[k]
            if source is None:
                torch.mm(columns[start:], (rows_t[:, start:stop] / (variances[k] * LN2)).to(dtype), out=block)
                block.clamp_(floor, 0.0)[diagonal, diagonal] = 0.0
                block.exp2_()  # exp(−D/2v) = 2^(−D/(2v ln 2))
            else:
                torch.mul(blocks[source], blocks[source], out=block).square_()
        for c, low, high in spans:  # own-class and (summed later) all-sample kernel sums, every variance at once
            if high > start:  # the chunk's rows i, over the columns j >= start of class c
                sums[:, c, start:stop] += blocks[:, max(low, start) - start:high - start].sum(dim=1)
            if stop < n and low < stop and high > start:  # the transposed block: columns j right of the chunk
                sums[:, c, stop:] += blocks[:, width:, max(low, start) - start:min(high, stop) - start].sum(dim=2)
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
    ``precision`` "float32" computes the kernel blocks in float32, as ibsgd does: about 1.5× faster
    on CPU, within ~1e−5 bits of "float64" on the 12-bit task's layers (see ``kde_mi_bits``).
    """

    noise_variance: float = 1e-3
    chunk_size: int = 256
    precision: str = "float64"

    kind: ClassVar[str] = "kde"
    summary: ClassVar[str] = "Kolchinsky-Tracey KDE upper/lower bounds on the noisy layer (ibsgd), noise variance σ²"

    @property
    def planes(self) -> tuple[str, ...]:
        return ("kde_upper", "kde_lower")

    def validate(self) -> None:
        if not (math.isfinite(self.noise_variance) and self.noise_variance > 0):
            raise ParameterError(f"estimators.kde.noise_variance must be a finite number > 0; got {self.noise_variance}")
        check_int("estimators.kde.chunk_size", self.chunk_size, 1)
        if self.precision not in PRECISIONS:
            raise ParameterError(f"estimators.kde.precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "KDE")
        variances = (self.noise_variance, 4.0 * self.noise_variance)  # upper (KL), lower (Bhattacharyya)
        mi = np.stack([kde_mi_bits(h, mi_set.y, mi_set.n_classes, variances, self.chunk_size,
                                   getattr(torch, self.precision)).cpu().numpy()
                       for h in layers])  # (L, bound, [ixt, ity])
        return {plane: (mi[:, k, 0].copy(), mi[:, k, 1].copy()) for k, plane in enumerate(self.planes)}
