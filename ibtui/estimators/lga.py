"""Local Gaussian approximation (LGA) of Gao, Ver Steeg & Galstyan 2015, on the noisy layer.

Density at each sample (local likelihood, Hjort & Jones 1996, Loader 1996)
-------------------------------------------------------------------------
Around each sample x = x_i the log-density is modelled as a quadratic, i.e. a locally
fitted Gaussian g(u) = exp(c + bᵀ(u−x) − ½(u−x)ᵀA(u−x)), chosen to maximise the local
likelihood with a Gaussian kernel of bandwidth h,

    Σ_{j≠i} K_h(x_j − x) log g(x_j) − (N−1) ∫ K_h(u − x) g(u) du.

Its stationarity conditions make the moments of K_h·g match the kernel-weighted sample
moments, which gives the maximiser in closed form. With, in units of h,

    w_j = exp(−‖x_j − x‖² / 2h²),  S0 = Σ_{j≠i} w_j,
    μ = Σ_j w_j (x_j − x)/h / S0,  Σ = Σ_j w_j (x_j − x)(x_j − x)ᵀ/h² / S0 − μμᵀ,

    ln p̂(x_i) = ln S0 − ln(N−1) − (d/2) ln 2π − d ln h − ½ ln|Σ| − ½ μᵀ Σ⁻¹ μ.

The sample itself is left out (j ≠ i). The bandwidth is the sample's own k-nearest-
neighbour distance, h_i = ρ_{k,i}, so it adapts to the local density, and the entropy is
the resubstitution estimate Ĥ = −(1/N) Σ_i ln p̂(x_i) (nats; ``lga_entropy_nats``). Every
other sample enters the sums (no truncation to the m nearest, which the reference codes
use for speed; in several dimensions that truncation biases the fit badly: see
``ibtui.estimators.gae``). The fit is exact at population level when the density is
Gaussian, at any bandwidth, so unlike plain kNN estimators the method does not assume the
density is locally uniform. The free scale c (a log-quadratic rather than a normalised
Gaussian) is what makes the maximiser closed-form, with no per-sample optimisation; the same
closed form is in the public code of Gao, Oh & Viswanath 2017 (``LNN_2_entropy``). Nothing
is clamped: duplicate samples (a k-th neighbour at distance 0) or a singular local
covariance raise ``ValueError``.

Extrapolated fits (isolated samples)
------------------------------------
At a sample far from the rest (the tail of a heavy-tailed density), the k-NN bandwidth is
as large as the distance to the bulk, so the kernel-weighted neighbours form a tight cloud
on one side of the sample and the "local" fit is the Gaussian of that cloud, evaluated far
outside it: ln p̂ gets −½ μᵀΣ⁻¹μ terms of hundreds or thousands of nats (one sample of a
10-D Student-t at N = 8192 was off by −1256 nats), which no average survives. The sample's
squared Mahalanobis distance from its neighbours' fitted cloud, z² = μᵀΣ⁻¹μ, flags this:
for interior samples it stays of the order of d (maxima 13, 20, 34 for d = 2, 5, 10 on
Gaussians at N = 8192, 0 samples flagged there up to d = 20). Where z² exceeds the χ²_d
quantile of upper tail ``EXTRAPOLATION_TAIL`` = 1e-6 (27.6 for d = 2, 46.9 for d = 10)
the fit is replaced by the Kozachenko-Leonenko k-NN log-density at that sample,
ψ(k) − ψ(N) − ln c_d − d ln ρ_k, which needs no local model (``local_gaussian_fit``
returns both and the mask). On 5-D Student-t (ν = 3), N = 2000, this took the entropy
error from +0.21 … +0.65 nats to within ±0.11 over 5 seeds (tests); the public reference
code instead drops samples whose local covariance is nearly singular.

Mutual information on the noisy layer
-------------------------------------
A deterministic layer T of continuous inputs has I(X;T) = ∞, so, as for the KDE bounds,
both quantities are those of the noisy layer Z = T + ε, ε ~ N(0, σ² I), σ² =
``noise_variance``. One noisy copy of every sample is drawn with a CPU generator seeded by
``seed`` (the same noise for every layer of every call, reproducible on any device), and
with d the layer width and Ĥ the entropy estimate above:

    I(X;T) = Ĥ(Z) − (d/2) ln(2πeσ²)               (H(Z|X) of Gaussian noise, exact)
    I(T;Y) = Ĥ(Z) − Σ_c p(c) Ĥ(Z | Y=c)             (class subsets, p(c) = N_c / N)

both divided by ln 2 (bits). X is the sample index, as for KDE: identical inputs give
identical T, and T is a deterministic function of X.

Bias direction (measured at N = 2000, see tests/test_estimators_lga_gae.py)
---------------------------------------------------------------------------
- Smooth densities, interior: the random k-NN bandwidth leaves a small downward bias in Ĥ
  (≈ −0.01 … −0.035 nats for k = 10, d = 1 … 5, nothing from d ≈ 10; ``gae`` subtracts it).
  Correlated Gaussians come out within about 0.1 nats for d = 1 … 20.
- Heavy tails: with the guard above, 1-5-D Student-t (ν = 3) and sinh-transformed
  Gaussians come out within about 0.1 nats; in 10-20 dimensions the remaining error of
  both the fits and the k-NN fallback grows to 0.3-2 nats (upward) at N = 2000-8000.
- Bounded support / sharp edges: upward bias in Ĥ (the fitted Gaussians spill over the
  edge): a uniform box gives ≈ −0.01, +0.05, +0.24, +0.7, +1.8 nats for d = 1, 2, 3, 5, 10,
  no better than plain Kozachenko-Leonenko k-NN there.
- Few samples for the dimension: the kernel then spans most of the sample and the
  estimate tends to the entropy of a Gaussian fitted to it, an upper bound for the
  true entropy of a non-Gaussian distribution with that covariance. The same holds per
  cluster: Gaussian clusters of m samples in 6-D (64 of them, σ = 0.1, 1 apart) give
  entropy errors of +5.6, +1.6, +0.22, +0.12, −0.06 nats for m = 8, 16, 32, 48, 64 (k = 10;
  GAE k = 5: +1.9, +0.66, +0.08, +0.08, −0.04). Class-conditional subsets of a quantized
  layer are such clusters, so I(T;Y) there can be badly off, even negative
  (docs/estimators.md, family (d)).
- Noisy layer: Z is a mixture of N Gaussians of variance σ² seen through one draw each.
  Where the points of T are much farther apart than σ the estimator sees a smooth cloud,
  not the narrow components, so Ĥ(Z) and I(X;T) are overestimated and I(X;T) can exceed
  log2 N = H(X) (an impossible value: reported, not clamped): the untrained 12-bit network's
  10-unit tanh layer gives about 30 bits at σ² = 1e-3, where the KDE bounds give 12. Drawing
  several noisy copies per sample does not cure this in several dimensions (the Gaussian
  kernel of a fit then reaches the neighbouring components), so it is not offered. The
  estimate is meaningful where σ is not small next to the spacing of the layer's points.
  The class-conditional clouds are smoothed the same way, which biases I(T;Y) downwards
  there (0.6 bits for that layer, where the KDE bounds give 0.999).
- I(T;Y) is a difference of estimates with different sample sizes; its bias has no fixed
  sign and it is not bounded to [0, H(Y)] (reported as computed).

Cost
----
O(N² (1 + d + d(d+1)/2)) time per entropy (a kernel-weighted moment matrix product),
memory about 2 · chunk_size · N + N · (1 + d + d(d+1)/2) float64 values, in float64 on the
activations' device; layers wider than ``MAX_DIM`` = 64 units are refused. The
class-conditional terms add Σ_c N_c² of the same work. With ``max_samples`` > 0 a seeded
subsample of that many samples (the same for every layer and call) replaces the N samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import LN2, MAX_SEED, Estimator, MISet, Plane, check_int, check_samples

MAX_DIM = 64
"""Widest layer accepted: the method fits a d×d covariance around every sample."""

EntropyFn = Callable[["torch.Tensor"], float]


def _as_samples(samples) -> torch.Tensor:
    """(N, d) float64 tensor of finite samples, centred (entropy is translation invariant)."""
    x = torch.as_tensor(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"samples must have shape (N, d); got {tuple(x.shape)}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("samples contain NaN/inf")
    return x - x.mean(dim=0)


EXTRAPOLATION_TAIL = 1e-6
"""A fit is rejected where the sample's z² = μᵀΣ⁻¹μ exceeds the χ²_d quantile of this upper tail."""


def extrapolation_threshold(d: int) -> float:
    """z² above which a local fit counts as an extrapolation: the χ²_d upper-``EXTRAPOLATION_TAIL`` quantile."""
    from scipy.stats import chi2

    return float(chi2.isf(EXTRAPOLATION_TAIL, d))


def local_gaussian_fit(samples, k: int, chunk_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (ln p̂ of the local Gaussian fit, ln p̂ of the k-NN estimate, extrapolated mask): (N,) each.

    Both densities are leave-one-out, in nats, float64. The k-NN value is Kozachenko-Leonenko's,
    ψ(k) − ψ(N) − ln c_d − d ln ρ_k (c_d the unit ball's volume). ``extrapolated`` marks the samples
    whose fit puts them more than ``extrapolation_threshold(d)`` (squared, in the fitted local
    covariance) from the kernel-weighted mean of their neighbours (see the module docstring).
    Rows are processed ``chunk_size`` at a time. Raises ``ValueError`` for N ≤ max(k, d),
    d > ``MAX_DIM``, duplicate samples (ρ_k = 0) or a singular local covariance.
    """
    x = _as_samples(samples)
    n, d = x.shape
    if d > MAX_DIM:
        raise ValueError(f"local Gaussian fits need d <= {MAX_DIM} dimensions; got d={d}")
    if n <= max(k, d):
        raise ValueError(f"local Gaussian fits need more than max(k, d) = {max(k, d)} samples; got {n}")
    rows, cols = torch.triu_indices(d, d, device=x.device)
    # Per sample j: [1, x_j, upper triangle of x_j x_jᵀ]; one matrix product gives all moments.
    features = torch.cat([torch.ones_like(x[:, :1]), x, x[:, rows] * x[:, cols]], dim=1)
    sq_norms = (x * x).sum(dim=1)
    fit = torch.empty(n, dtype=torch.float64, device=x.device)
    knn = torch.empty(n, dtype=torch.float64, device=x.device)
    extrapolated = torch.empty(n, dtype=torch.bool, device=x.device)
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    from scipy.special import digamma

    knn_constant = float(digamma(k) - digamma(n)) - log_unit_ball
    threshold = extrapolation_threshold(d)
    for start in range(0, n, chunk_size):
        xb = x[start:start + chunk_size]
        r = xb.shape[0]
        dist = torch.addmm(sq_norms[None, :], xb, x.T, alpha=-2.0)  # ‖x_j‖² − 2 x_i·x_j
        dist.add_(sq_norms[start:start + r, None]).clamp_(min=0.0)
        own = torch.arange(r, device=x.device)
        dist[own, start + own] = math.inf  # leave the sample itself out
        h2 = torch.topk(dist, k, dim=1, largest=False).values[:, -1]  # squared k-NN distance
        if not bool((h2 > 0).all()):
            raise ValueError("duplicate samples: a k-th nearest neighbour at distance 0 (entropy of a "
                             "continuous distribution is undefined; add noise or raise k)")
        moments = torch.exp_(dist.mul_(-0.5 / h2[:, None])) @ features  # (r, 1 + d + d(d+1)/2)
        s0 = moments[:, 0]
        mean = moments[:, 1:1 + d] / s0[:, None]
        second = torch.empty(r, d, d, dtype=torch.float64, device=x.device)
        second[:, rows, cols] = moments[:, 1 + d:] / s0[:, None]
        second[:, cols, rows] = moments[:, 1 + d:] / s0[:, None]
        cov = (second - mean[:, :, None] * mean[:, None, :]) / h2[:, None, None]  # in units of h²
        mu = (mean - xb) / h2.sqrt()[:, None]  # in units of h
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError("singular local covariance (samples on a lower-dimensional set at the "
                             "kernel's scale); raise k or add noise")
        z = torch.linalg.solve_triangular(chol, mu[:, :, None], upper=False)[..., 0]
        z2 = (z * z).sum(dim=1)
        half_logdet = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)
        log_h_d = 0.5 * d * torch.log(h2)
        fit[start:start + r] = (torch.log(s0) - math.log(n - 1) - 0.5 * d * math.log(2 * math.pi)
                                - log_h_d - half_logdet - 0.5 * z2)
        knn[start:start + r] = knn_constant - log_h_d
        extrapolated[start:start + r] = z2 > threshold
    return fit, knn, extrapolated


def local_gaussian_log_density(samples, k: int, chunk_size: int = 512, fit_bias: float = 0.0) -> torch.Tensor:
    """Leave-one-out log-density ln p̂(x_i) (nats) at every sample: (N,) float64.

    The local Gaussian fit minus ``fit_bias`` (nats) where the fit is an interpolation, the
    Kozachenko-Leonenko k-NN value where it is an extrapolation (``local_gaussian_fit``).
    """
    fit, knn, extrapolated = local_gaussian_fit(samples, k, chunk_size)
    return torch.where(extrapolated, knn, fit - fit_bias)


def lga_entropy_nats(samples, k: int = 10, chunk_size: int = 512) -> float:
    """LGA differential entropy estimate in nats: −mean_i ln p̂(x_i) (no bias correction)."""
    return float(-local_gaussian_log_density(samples, k, chunk_size).mean())


def noisy_layer_mi_bits(h: torch.Tensor, y: torch.Tensor, n_classes: int, entropy_nats: EntropyFn,
                        noise_variance: float, seed: int) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in bits of the noisy layer Z = T + ε, from an entropy estimator in nats.

    Every row gets N(0, σ² I) noise from a CPU generator seeded with ``seed`` (then moved to
    h's device). I(X;T) = Ĥ(Z) − (d/2) ln(2πeσ²); I(T;Y) = Ĥ(Z) − Σ_c p(c) Ĥ(Z|Y=c) over the
    classes present, p(c) = N_c / N.
    """
    h = h.to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(h.shape, generator=generator, dtype=torch.float64)
    z = h + math.sqrt(noise_variance) * noise.to(h.device)
    h_z = entropy_nats(z)
    h_z_given_y = 0.0
    for c in range(n_classes):
        members = y == c
        count = int(members.sum())
        if count:
            try:
                h_class = entropy_nats(z[members])
            except ValueError as error:
                raise ValueError(f"class {c} ({count} samples): {error}") from error
            h_z_given_y += count / y.shape[0] * h_class
    h_noise = 0.5 * h.shape[1] * math.log(2 * math.pi * math.e * noise_variance)
    return (h_z - h_noise) / LN2, (h_z - h_z_given_y) / LN2


def require_finite(layers: Sequence[torch.Tensor], name: str) -> None:
    for i, h in enumerate(layers):
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"layer {i} has NaN/inf activations; {name} needs finite values")


def subsample(n: int, max_samples: int, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded subsample of ``max_samples`` of n rows; None for all rows."""
    if max_samples <= 0 or max_samples >= n:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:max_samples].sort().values


def validate_common(kind: str, k: int, noise_variance: float, max_samples: int, seed: int, chunk_size: int) -> None:
    check_int(f"estimators.{kind}.k", k, 1)
    if not (isinstance(noise_variance, (int, float)) and math.isfinite(noise_variance) and noise_variance > 0):
        raise ParameterError(f"estimators.{kind}.noise_variance must be a finite number > 0; got {noise_variance}")
    check_int(f"estimators.{kind}.max_samples (0 = all)", max_samples, 0, 2**62)
    if 0 < max_samples <= k:
        raise ParameterError(f"estimators.{kind}.max_samples must exceed k={k} (or be 0 = all); got {max_samples}")
    check_int(f"estimators.{kind}.seed", seed, 0, MAX_SEED)
    check_int(f"estimators.{kind}.chunk_size", chunk_size, 1)


def validate_samples(kind: str, k: int, max_samples: int, mi_set: MISet) -> None:
    """The k of LGA/GAE leaves neighbours in the (sub)sampled set."""
    n = mi_set.n if max_samples <= 0 else min(max_samples, mi_set.n)
    check_samples(f"estimators.{kind}.k", k, n)


def noisy_planes(layers: Sequence[torch.Tensor], mi_set: MISet, entropy_nats: EntropyFn, *, name: str,
                 noise_variance: float, max_samples: int, seed: int) -> Plane:
    """(ixt, ity) float64 arrays (L,) in bits for every layer, on one shared subsample."""
    require_finite(layers, name)
    keep = subsample(mi_set.n, max_samples, seed)
    y = mi_set.y if keep is None else mi_set.y[keep.to(mi_set.y.device)]
    mi = np.array([
        noisy_layer_mi_bits(h if keep is None else h[keep.to(h.device)], y.to(h.device), mi_set.n_classes,
                            entropy_nats, noise_variance, seed)
        for h in layers], dtype=np.float64).reshape(len(layers), 2)
    return mi[:, 0].copy(), mi[:, 1].copy()


@dataclass(frozen=True)
class LocalGaussian(Estimator):
    """Local Gaussian approximation (Gao, Ver Steeg & Galstyan 2015) on the noisy layer, in bits.

    Entropies by local-likelihood Gaussian fits with a k-NN bandwidth (``lga_entropy_nats``),
    no bias correction; I(X;T) and I(T;Y) of the layer plus N(0, σ² I) noise,
    σ² = ``noise_variance`` (module docstring: definitions, bias direction, cost).
    Noise and subsample are seeded by ``seed``; ``max_samples`` > 0 uses a seeded
    subsample of that many samples, the same for every layer and call (0 = all).
    Labels enter through ``mi_set.y``; ``mi_set.x_ids`` is not used. Activations must be
    finite; a class present with too few samples for a fit raises ``ValueError``.
    """

    k: int = 10
    noise_variance: float = 1e-3
    max_samples: int = 0
    seed: int = 0
    chunk_size: int = 512

    kind: ClassVar[str] = "lga"
    summary: ClassVar[str] = ("Local Gaussian approximation (Gao et al. 2015): local-likelihood Gaussian fits with "
                              "k-NN bandwidth, on the noisy layer (noise variance σ²)")

    def validate(self) -> None:
        validate_common(self.kind, self.k, self.noise_variance, self.max_samples, self.seed, self.chunk_size)

    def validate_for(self, mi_set: MISet) -> None:
        validate_samples(self.kind, self.k, self.max_samples, mi_set)

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        def entropy(z: torch.Tensor) -> float:
            return lga_entropy_nats(z, self.k, self.chunk_size)

        return {self.kind: noisy_planes(layers, mi_set, entropy, name="LGA", noise_variance=self.noise_variance,
                                        max_samples=self.max_samples, seed=self.seed)}
