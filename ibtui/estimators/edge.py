"""EDGE, the ensemble dependency graph estimator (Noshad, Zeng & Hero 2019), in bits.

The samples of the layer T are hashed into buckets (locality-sensitive hashing); the other
variable's values are its buckets (in ibtui's MI sets both the input X, by ``mi_set.x_ids``, and
the label Y are discrete: EDGE with γ → 0, the reference's advice for discrete data). With N_i
samples in bucket i of X (or Y), M_j in bucket j of T and N_ij in both (an edge of the dependency
graph), one base estimate is

    Î = (1/N) Σ_edges N_ij · clip(log2(N_ij N / (N_i M_j)), 0.001, U)          (bits)

and EDGE is the median of L base estimates whose bucket widths grow from ε to 1.1 ε in equal
steps, each with its grid shifted by j/L of a width. As in the reference code (mrtnoshad/EDGE,
``EDGE_4_4_1.py``, its defaults: U = 10, γ = 1, ``epsilon_vector='range'``,
``eps_range_factor=0.1``, ``ensemble_estimation='median'``, L = 10, ``normalize_epsilon=True``,
not stochastic):
- hashing: T itself, floored per unit, when it has at most 6 units; otherwise the p-stable
  projection T W with W (d × k), k = min(d, ⌊log2(N/10)⌋), W_uv ~ N(0, 1/(s_u² d)), s_u the
  unit's standard deviation (1 where below 1e-4), drawn once from ``seed``;
- widths per projected coordinate: ε = (r + 1e-4) · 18 k / max(1 + ln d, 1) · 0.4 γ, with r the
  mean distance from 500 sampled points to their K-th nearest neighbour along that coordinate,
  K = ⌊0.43 N^(2/3 + 0.17 k/(k+1)) e^(−1/max(10⁴, k⁴))⌋;
- ``normalize_epsilon``: a first estimate Î₀ rescales γ by 2^(−√(2 Î₀) + 0.5/Î₀) and the
  estimate is taken again.
Differences from the reference, stated: X and Y are not hashed (they are discrete ids here, and
the reference treats data as discrete by shrinking its widths to zero); the reference's floor
hashing when both variables have ≤ 6 dimensions becomes "T has ≤ 6 units"; the points for the
K-NN widths are drawn from ``seed`` (the reference seeds NumPy's global generator with 3334).

Bounds and bias: the floor replaces every negative pointwise term by 0.001, so Î is at least the
plug-in MI of the bucket pairs, and above it by the weight of the pairs whose bucket holds fewer
samples of that value than chance: a systematic **upward** bias where classes overlap (measured on
a 1-D two-class Gaussian mixture, truth 0.486 bits, N = 4096: 0.62 bits, while the plug-in MI of
the same buckets is below the truth). Each pair's term being at most log2(1/p(other)) (and U),
Î(T;Y) ≤ H(Y) + 0.001 and Î(X;T) ≤ min(U, H(X) + 0.001); with distinct inputs I(X;T) is the
entropy of the buckets of T, capped at U = 10 bits (below log2 N when N > 1024: a cap).
In wide layers the p-stable projection keeps only ⌊log2(N/10)⌋ coordinates and the widths grow
with them: on a d-dimensional mixture whose label lives in one coordinate, Î(T;Y) falls far below
the truth as d grows (docs/estimators.md lists the measured values).
Cost: O(L N k) per layer and quantity (hashing by ``torch.unique``), plus 500 N k for the widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import Estimator, MISet, Plane, require_finite

FLOOR_HASHING_MAX_UNITS = 6
KNN_QUERIES = 500
POINTWISE_FLOOR = 0.001
RANGE_FACTOR = 0.1


def edge_weights_mi_bits(a: torch.Tensor, b: torch.Tensor, upper: float) -> float:
    """(1/N) Σ_edges N_ij clip(log2(N_ij N / (N_i M_j)), 0.001, upper) for bucket ids a, b (N,) int64."""
    n = a.shape[0]
    pairs, counts = torch.unique(a * (int(b.max()) + 1) + b, return_counts=True)
    n_a = torch.bincount(a)[pairs // (int(b.max()) + 1)]
    n_b = torch.bincount(b)[pairs % (int(b.max()) + 1)]
    counts = counts.to(torch.float64)
    pointwise = torch.log2(counts * n / (n_a.to(torch.float64) * n_b.to(torch.float64)))
    return float((counts * pointwise.clamp(POINTWISE_FLOOR, upper)).sum() / n)


def bucket_ids(codes: torch.Tensor) -> torch.Tensor:
    """Ids 0..B−1 of the distinct rows of integer grid codes (N, k): one integer per row, exact
    (mixed radix over each column's range) when the ranges' product fits in 62 bits, else rows."""
    low = codes.min(dim=0).values
    spans = (codes.max(dim=0).values - low + 1).tolist()
    if math.prod(spans) < 2 ** 62:
        key = torch.zeros(codes.shape[0], dtype=torch.int64, device=codes.device)
        for column, span in enumerate(spans):  # loop over coordinates (k ≤ log2 N), not samples
            key = key * span + (codes[:, column] - low[column])
        return torch.unique(key, return_inverse=True)[1].reshape(-1)
    return torch.unique(codes, dim=0, return_inverse=True)[1].reshape(-1)


def knn_width(column: torch.Tensor, projected_units: int, generator: torch.Generator) -> float:
    """The reference's K-NN width of one coordinate (N,): the mean distance from ``KNN_QUERIES``
    sampled points (with replacement) to their K-th nearest neighbour, the point itself included."""
    n = column.shape[0]
    k = math.floor(0.43 * n ** (2 / 3 + 0.17 * projected_units / (projected_units + 1))
                   * math.exp(-1.0 / max(10000, projected_units ** 4)))
    k = min(max(k, 1), n)
    queries = column[torch.randint(n, (KNN_QUERIES,), generator=generator).to(column.device)]
    distances = (column[None, :] - queries[:, None]).abs()
    return float(distances.kthvalue(k, dim=1).values.mean())


@dataclass(frozen=True)
class EDGE(Estimator):
    """Ensemble dependency graph estimator (Noshad et al. 2019), reference defaults; see the module docstring."""

    ensemble: int = 10
    gamma: float = 1.0
    upper: float = 10.0
    normalize_epsilon: bool = True
    seed: int = 0

    kind: ClassVar[str] = "edge"
    summary: ClassVar[str] = ("EDGE: hashed dependency graph, median of 10 shifted grids (Noshad et al. 2019), "
                              "linear time; plug-in on buckets")

    def validate(self) -> None:
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int) or not 1 <= self.ensemble <= 1000:
            raise ParameterError(f"estimators.edge.ensemble must be an integer in [1, 1000]; got {self.ensemble!r}")
        for name in ("gamma", "upper"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (math.isfinite(value) and 1e-6 <= value <= 1e6):
                raise ParameterError(f"estimators.edge.{name} must be a number in [1e-6, 1e6]; got {value!r}")
        if not isinstance(self.normalize_epsilon, bool):
            raise ParameterError(f"estimators.edge.normalize_epsilon must be true or false; "
                                 f"got {self.normalize_epsilon!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ParameterError(f"estimators.edge.seed must be an integer in [0, 2^63); got {self.seed!r}")

    def coordinates(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the hashed coordinates Z (N, k), their K-NN widths r (k,)) of a layer (N, d)."""
        h = h.reshape(h.shape[0], -1).to(torch.float64)
        n, d = h.shape
        generator = torch.Generator().manual_seed(self.seed)
        if d <= FLOOR_HASHING_MAX_UNITS:
            z = h
        else:
            k = max(1, min(d, math.floor(math.log2(max(n, 1) / 10.0)))) if n > 10 else 1
            std = h.std(dim=0, unbiased=False)
            std = torch.where(std < 1e-4, torch.ones_like(std), std)
            w = torch.randn(d, k, generator=generator, dtype=torch.float64).to(h.device)
            z = h @ (w / (std[:, None] * math.sqrt(d)))
        widths = torch.tensor([knn_width(z[:, u], z.shape[1], generator) for u in range(z.shape[1])],
                              dtype=torch.float64, device=h.device)
        return z, widths + 1e-4

    def ensemble_bits(self, z: torch.Tensor, widths: torch.Tensor, units: int, other: torch.Tensor,
                      gamma: float) -> float:
        """The median of the L base estimates at smoothness ``gamma``."""
        base = widths * (18.0 * z.shape[1] / max(1.0 + math.log(units), 1.0)) * 0.4 * gamma
        estimates = []
        for j, stretch in enumerate(np.linspace(1.0, 1.0 + RANGE_FACTOR, self.ensemble)):  # loop over grids
            eps = base * float(stretch)
            codes = torch.floor((z + (j / self.ensemble) * eps) / eps).to(torch.int64)
            buckets = bucket_ids(codes)
            estimates.append(edge_weights_mi_bits(other, buckets, self.upper))
        return float(np.median(estimates))

    def mi_bits(self, h: torch.Tensor, other: torch.Tensor,
                coordinates: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
        """EDGE's I(other; T) in bits for a layer h (N, d) and discrete ids ``other`` (N,);
        ``coordinates``: ``self.coordinates(h)`` when already computed."""
        z, widths = coordinates if coordinates is not None else self.coordinates(h)
        units = h.reshape(h.shape[0], -1).shape[1]
        other = torch.unique(other.to(z.device), return_inverse=True)[1].reshape(-1)
        first = self.ensemble_bits(z, widths, units, other, self.gamma)
        if not self.normalize_epsilon:
            return first
        return self.ensemble_bits(z, widths, units, other,
                                  self.gamma * 2.0 ** (-math.sqrt(2.0 * first) + 0.5 / first))

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "EDGE")
        ixt, ity = np.zeros(len(layers)), np.zeros(len(layers))
        for index, h in enumerate(layers):  # loop over layers, not samples
            coordinates = self.coordinates(h)
            ixt[index] = self.mi_bits(h, mi_set.x_ids, coordinates)
            ity[index] = self.mi_bits(h, mi_set.y, coordinates)
        return {self.kind: (ixt, ity)}
