"""Matrix-based Rényi α-entropy (Giraldo, Rao & Príncipe 2014), as used on CNNs by Wickstrøm et
al. (2019) and Yu et al. (2020).

Entropies are functionals of normalised Gram matrices instead of densities. For N samples and a
positive definite kernel κ, K_ij = κ(z_i, z_j) and A = K_ij / (N √(K_ii K_jj)) (trace 1):

    S_α(A)    = 1/(1−α) log2 Σ_i λ_i(A)^α                      (bits; α → 1: −Σ λ log2 λ)
    S_α(A, B) = S_α(A ∘ B / tr(A ∘ B))                         (∘: elementwise product)
    I_α(X;T)  = S_α(A_X) + S_α(A_T) − S_α(A_X, A_T)
    I_α(T;Y)  = S_α(A_T) + S_α(A_Y) − S_α(A_T, A_Y)

Kernels: the layer T and the input X (``mi_set.x``; when the set has no input vectors, a delta
kernel on the input ids) use the Gaussian kernel exp(−‖z_i − z_j‖² / 2σ²); the labels the linear
kernel of their one-hot codes (K_ij = 1 when y_i = y_j, else 0), for which S_α(A_Y) is exactly
the Rényi α-entropy of the class proportions. The kernel width σ per variable (``width``):
- ``"silverman"``: Silverman's rule of thumb, σ = s (4 / (d + 2))^(1/(d+4)) N^(−1/(d+4)), s the
  root mean variance of the d units (Giraldo et al.'s choice). In wide layers (d ≫ 1) σ → s,
  small next to the typical distance √(2d) s: every sample its own cluster, S_α → log2 N;
- ``"median"``: σ = the median distance between distinct samples / √2, scale-free at any width
  (the median heuristic; wide layers and CNN feature maps);
- a positive number: that σ, in the units of the activations (and of the inputs).

Properties (exact, for any kernel): 0 ≤ S_α(A) ≤ log2 N; max(S_α(A), S_α(B)) ≤ S_α(A, B) ≤
S_α(A) + S_α(B), so 0 ≤ I_α ≤ min of the two entropies; I_α(X;T) ≤ log2 N and I_α(T;Y) ≤
S_α(A_Y) ≤ log2 C. Invariant to the order of the samples, and (Gaussian kernel) to rotations and
translations of T; to its scale too under the ``silverman`` and ``median`` widths.

Bias and meaning: these are not Shannon quantities (α = 1 gives the von Neumann entropy of A,
not H(T)), and they depend on σ by design; compare values only at one α and width rule. α = 2
is computed without eigenvalues (Σ λ² = ‖A‖²_F, exact); other α need the eigenvalues of N × N
matrices: up to three per layer (A_T, A_X ∘ A_T, A_T ∘ A_Y), O(N³) time. Exact shortcuts: a
delta kernel's entropy is that of the ids' proportions, and its product with A_T is block diagonal
by id, so its spectrum is that of the blocks (the label's C blocks of about N/C samples: C² times
less work than the full matrix; one-sample blocks are their diagonal entry). Neither A_Y nor, for
inputs given by id, A_X is ever built.

Memory: Gram matrices are built ``chunk_size`` rows at a time from the activations (never an
N × N × d tensor); each N × N matrix takes 8 N² bytes in float64 (``precision``; 4 N² in
float32): at N = 10,000 in float64 0.8 GB per matrix, at most three alive at once (A_X, A_T and
their product, when the inputs are vectors), plus the eigensolver's workspace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import Estimator, MISet, Plane, require_finite

WIDTH_RULES = ("silverman", "median")
PRECISIONS = ("float64", "float32")
MEDIAN_SAMPLE = 2000
"""The median heuristic looks at the distances among at most this many samples (evenly spaced)."""


def silverman_width(z: torch.Tensor) -> float:
    """Silverman's rule of thumb for a d-dimensional Gaussian kernel: s (4/(d+2))^(1/(d+4)) N^(−1/(d+4)),
    s = sqrt(mean per-unit variance). 1.0 for constant data (any width gives the same Gram matrix)."""
    n, d = z.shape
    s = float(z.to(torch.float64).var(dim=0, unbiased=False).mean().sqrt())
    if s == 0.0:
        return 1.0
    return s * (4.0 / (d + 2)) ** (1.0 / (d + 4)) * n ** (-1.0 / (d + 4))


def median_width(z: torch.Tensor) -> float:
    """The median heuristic: σ = median distance between distinct samples / √2 (of at most
    ``MEDIAN_SAMPLE`` samples, evenly spaced). 1.0 when all samples are equal."""
    sample = z[:: max(1, z.shape[0] // MEDIAN_SAMPLE)].to(torch.float64)
    distances = torch.cdist(sample, sample)
    positive = distances[distances > 0]
    return float(positive.median()) / math.sqrt(2.0) if positive.numel() else 1.0


def gaussian_gram(z: torch.Tensor, sigma: float, dtype: torch.dtype, chunk_size: int) -> torch.Tensor:
    """exp(−‖z_i − z_j‖² / 2σ²) for all pairs, an (N, N) matrix of ``dtype``, built by row chunks."""
    z = z.to(torch.float64)
    z = z - z.mean(dim=0, keepdim=True)  # distances do not depend on the origin; smaller norms round less
    norms = (z * z).sum(dim=1)
    gram = torch.empty((z.shape[0], z.shape[0]), dtype=dtype, device=z.device)
    for start in range(0, z.shape[0], chunk_size):  # loop over row chunks, not samples
        rows = slice(start, start + chunk_size)
        squared = (norms[rows, None] + norms[None, :] - 2.0 * z[rows] @ z.T).clamp_min_(0.0)
        gram[rows] = torch.exp(-squared / (2.0 * sigma * sigma)).to(dtype)
    return gram


def same_id_gram(ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """K_ij = 1 when ids_i = ids_j, else 0: the delta kernel of discrete values (and the linear
    kernel of one-hot codes)."""
    return (ids[:, None] == ids[None, :]).to(dtype)


def normalised(gram: torch.Tensor) -> torch.Tensor:
    """A = K_ij / √(K_ii K_jj) / N, in place; trace 1."""
    diagonal = torch.diagonal(gram).clamp_min(torch.finfo(gram.dtype).tiny).sqrt()
    gram /= diagonal[:, None]
    gram /= diagonal[None, :]
    gram /= gram.shape[0]
    return gram


def spectrum_entropy_bits(eigenvalues: torch.Tensor, alpha: float) -> float:
    """S_α in bits of a spectrum (non-negative values, normalised here to sum 1)."""
    eigenvalues = eigenvalues.to(torch.float64).clamp_min(0.0)
    eigenvalues = eigenvalues / eigenvalues.sum()
    if alpha == 1.0:
        positive = eigenvalues[eigenvalues > 0]
        return float(-(positive * torch.log2(positive)).sum())
    return float(torch.log2((eigenvalues ** alpha).sum())) / (1.0 - alpha)


def ids_entropy_bits(ids: torch.Tensor, alpha: float) -> float:
    """S_α of the normalised delta-kernel Gram matrix of discrete ids, exactly: that matrix is block
    diagonal (after sorting) with blocks of ones / N, so its spectrum is the ids' proportions."""
    _, counts = torch.unique(ids, return_counts=True)
    return spectrum_entropy_bits(counts, alpha)


def renyi_entropy_bits(a: torch.Tensor, alpha: float) -> float:
    """S_α of a trace-normalised PSD matrix, in bits (α = 1: von Neumann; α = 2: from ‖A‖_F;
    a diagonal matrix: from its diagonal; otherwise from its eigenvalues)."""
    a = a / torch.trace(a)
    if alpha == 2.0:
        return -math.log2(float((a.to(torch.float64) ** 2).sum()))
    diagonal = torch.diagonal(a)
    if int(torch.count_nonzero(a)) == int(torch.count_nonzero(diagonal)):  # e.g. a delta kernel ∘ anything
        return spectrum_entropy_bits(diagonal, alpha)
    return spectrum_entropy_bits(torch.linalg.eigvalsh(a), alpha)
def joint_with_ids_entropy_bits(a: torch.Tensor, ids: torch.Tensor, alpha: float) -> float:
    """S_α(A, A_ids) for the delta kernel of discrete ids, exactly and without the N × N product:
    A ∘ A_ids keeps A's entries within each group of equal ids, so (after sorting) it is block
    diagonal and its spectrum is the union of the groups' blocks' spectra. Groups of one sample give
    their diagonal entry; blocks of equal size are solved in one batched call."""
    ids = ids.to(a.device)
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    sizes = counts.tolist()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    spectra = []
    for size in sorted(set(sizes)):  # loop over distinct group sizes, not samples
        groups = torch.as_tensor(starts[np.asarray(sizes) == size], device=a.device)
        members = order[groups[:, None] + torch.arange(size, device=a.device)[None, :]]  # (G, size)
        blocks = a[members[:, :, None], members[:, None, :]]  # (G, size, size)
        spectra.append(torch.diagonal(blocks, dim1=1, dim2=2).reshape(-1) if size == 1
                       else torch.linalg.eigvalsh(blocks).reshape(-1))
    return spectrum_entropy_bits(torch.cat(spectra), alpha)


def joint_entropy_bits(a: torch.Tensor, b: torch.Tensor, alpha: float) -> float:
    """S_α(A, B) = S_α(A ∘ B / tr(A ∘ B)), in bits."""
    return renyi_entropy_bits(a * b, alpha)


@dataclass(frozen=True)
class MatrixRenyi(Estimator):
    """Matrix-based Rényi α-entropy MI (Giraldo et al. 2014), in bits; see the module docstring."""

    alpha: float = 1.01
    width: str | float = "silverman"
    precision: str = "float64"
    chunk_size: int = 1024

    kind: ClassVar[str] = "renyi"
    summary: ClassVar[str] = ("matrix-based Rényi α-entropy (Gram matrices; Giraldo et al. 2014, Yu et al. 2020): "
                              "not Shannon MI; depends on α and the kernel width")

    def validate(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not (math.isfinite(self.alpha) and 0.0 < self.alpha <= 100.0):
            raise ParameterError(f"estimators.renyi.alpha must be a number in (0, 100]; got {self.alpha!r}")
        if isinstance(self.width, str):
            if self.width not in WIDTH_RULES:
                raise ParameterError(f"estimators.renyi.width must be one of {', '.join(WIDTH_RULES)} "
                                     f"or a number > 0; got {self.width!r}")
        elif isinstance(self.width, bool) or not isinstance(self.width, (int, float)) \
                or not (math.isfinite(self.width) and 1e-12 <= self.width <= 1e12):
            raise ParameterError(f"estimators.renyi.width must be a number in [1e-12, 1e12] or one of "
                                 f"{', '.join(WIDTH_RULES)}; got {self.width!r}")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"estimators.renyi.precision must be one of {', '.join(PRECISIONS)}; "
                                 f"got {self.precision!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) \
                or not 1 <= self.chunk_size <= 1 << 20:
            raise ParameterError(f"estimators.renyi.chunk_size must be an integer in [1, 1048576]; "
                                 f"got {self.chunk_size!r}")

    def kernel_width(self, z: torch.Tensor) -> float:
        """σ for the samples z (N, d) under this estimator's width rule."""
        if self.width == "silverman":
            return silverman_width(z)
        if self.width == "median":
            return median_width(z)
        return float(self.width)

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        """The normalised Gram matrix A of the samples z (N, d) under the Gaussian kernel."""
        z = z.reshape(z.shape[0], -1)
        return normalised(gaussian_gram(z, self.kernel_width(z), getattr(torch, self.precision), self.chunk_size))

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "the matrix-based Rényi estimator")
        alpha = float(self.alpha)
        device = layers[0].device if layers else mi_set.y.device
        a_x = self.gram(mi_set.x.to(device)) if mi_set.x is not None else None  # else the ids' delta kernel
        s_x = renyi_entropy_bits(a_x, alpha) if a_x is not None else ids_entropy_bits(mi_set.x_ids, alpha)
        s_y = ids_entropy_bits(mi_set.y, alpha)
        ixt, ity = np.zeros(len(layers)), np.zeros(len(layers))
        for index, h in enumerate(layers):  # loop over layers, not samples
            a_t = self.gram(h.to(device))
            s_t = renyi_entropy_bits(a_t, alpha)
            joint_x = (joint_entropy_bits(a_x, a_t, alpha) if a_x is not None
                       else joint_with_ids_entropy_bits(a_t, mi_set.x_ids, alpha))
            ixt[index] = s_x + s_t - joint_x
            ity[index] = s_t + s_y - joint_with_ids_entropy_bits(a_t, mi_set.y, alpha)
            del a_t
        # exact bounds (module docstring); clamp only eigensolver rounding (≲ 1e-9 bits)
        return {self.kind: (np.clip(ixt, 0.0, None), np.clip(ity, 0.0, None))}
