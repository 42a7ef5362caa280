"""Gaussian (log-determinant) baseline: the noisy layer T + ε treated as Gaussian.

Model: ε ~ N(0, σ² I) is added to the layer's d units; T + ε is replaced by a Gaussian with
the empirical covariance of T plus σ² I, overall and within each class. In nats:

    H(T)      = ½ log det(2πe (Σ_T + σ² I))
    H(T|Y=c)  = ½ log det(2πe (Σ_c + σ² I)),        Σ_c: covariance of class c's samples
    H(T|X)    = (d/2) log(2πe σ²)                   (the noise entropy)
    I(X;T)    = ½ log det(I + Σ_T / σ²)
    I(T;Y)    = H(T) − Σ_c p(c) H(T|Y=c) = ½ log det(I + Σ_T/σ²) − Σ_c p(c) ½ log det(I + Σ_c/σ²)

with p(c) = N_c / N (empirical). Reported in bits (÷ ln 2). Covariances are the maximum-
likelihood ones (divided by N, resp. N_c), computed in float64 from centred activations;
log-determinants by Cholesky of I + Σ/σ² (always positive definite; eigen-free, stable).
With these ML covariances Σ_T ⪰ Σ_c p(c) Σ_c, so by concavity of log det both values are ≥ 0.

Assumptions: the network is deterministic (T a function of X) so that H(T+ε|X) is the noise
entropy; ``mi_set.x_ids`` is therefore not used (repeated inputs with different T count their
spread as information). Exact when T is Gaussian overall and within each class (then T + ε is
too); otherwise a parametric approximation.

Bias: among all distributions with a given covariance the Gaussian has the largest entropy,
so H(T+ε) ≤ ½ log det(2πe(Σ_T + σ²I)) and, H(T+ε|X) being exact, the reported I(X;T) is an
**upper bound** on the true I(X; T+ε) of the noisy layer (up to sampling error). I(T;Y), a
difference of two such upper bounds, has no guaranteed direction. Neither value is bounded
by H(X) or H(Y) in general: I(X;T) grows like (d/2) log2(var/σ²) for small σ², and I(T;Y)
can exceed H(Y) when classes are far apart relative to their spread (a mixture's covariance is
much larger than its components'). Finite N: the log det of a sample covariance is biased
downward (by up to about d(d+1)/(2N) nats); negligible for N ≫ d².

Parameters: ``noise_variance`` σ² > 0 (default 1e-3, as the KDE estimator).
Cost: O(N d²) for the covariances plus O(C d³) for the Cholesky factorizations per layer;
memory O(N d + d²). Runs on the activations' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import Estimator, LN2, MISet, Plane, require_finite


def half_logdet_identity_plus(cov: torch.Tensor, noise_variance: float) -> torch.Tensor:
    """½ ln det(I + cov / σ²) for a PSD matrix (d, d), by Cholesky (slogdet if that fails)."""
    d = cov.shape[-1]
    a = torch.eye(d, dtype=cov.dtype, device=cov.device) + cov / noise_variance
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.log(torch.diagonal(chol)).sum()
    return 0.5 * torch.linalg.slogdet(a).logabsdet


def ml_covariance(h: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood covariance (divided by N) of the rows of h (N, d), float64."""
    centred = h - h.mean(dim=0, keepdim=True)
    return centred.T @ centred / h.shape[0]


def gaussian_mi_bits(h: torch.Tensor, y: torch.Tensor, n_classes: int,
                     noise_variance: float) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in bits of one layer under the Gaussian model of the module docstring."""
    h = h.to(torch.float64)
    n = h.shape[0]
    if n == 0:
        return 0.0, 0.0
    total = half_logdet_identity_plus(ml_covariance(h), noise_variance)
    conditional = torch.zeros((), dtype=torch.float64, device=h.device)
    for c in range(n_classes):  # loop over classes, not samples
        members = h[y == c]
        if members.shape[0] > 0:
            conditional += members.shape[0] / n * half_logdet_identity_plus(ml_covariance(members), noise_variance)
    return float(total) / LN2, float(total - conditional) / LN2



@dataclass(frozen=True)
class Gaussian(Estimator):
    """Log-determinant baseline: T + N(0, σ²I) treated as Gaussian (see module docstring), in bits."""

    noise_variance: float = 1e-3

    kind: ClassVar[str] = "gaussian"
    summary: ClassVar[str] = ("Gaussian log-det baseline on the noisy layer T+ε (σ²): "
                              "upper bound on I(X;T), not bounded by H(X)")

    def validate(self) -> None:
        if not (math.isfinite(self.noise_variance) and self.noise_variance > 0):
            raise ParameterError("estimators.gaussian.noise_variance must be a finite number > 0; "
                            f"got {self.noise_variance}")

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "the Gaussian estimator")
        mi = np.array([gaussian_mi_bits(h, mi_set.y, mi_set.n_classes, self.noise_variance) for h in layers],
                      dtype=np.float64).reshape(len(layers), 2)
        return {self.kind: (mi[:, 0].copy(), mi[:, 1].copy())}
