"""Binning estimators: discretise each activation, then plug-in entropies of the binned rows.

Both classes share ``binned_plane``, which turns integer bin codes into the information
plane. With T the binned layer (its distinct rows), in bits:
I(X;T) = H(T) − H(T|X), H(T|X) = H(X,T) − H(X);  I(T;Y) = H(T) − H(T|Y), H(T|Y) = H(T,Y) − H(Y).
H(T|X) is computed from the joint counts, never assumed 0: it is positive when a repeated
input has different binned rows (e.g. pooled noisy activations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from ibtui.errors import UserError
from ibtui.estimators.base import Estimator, MISet, Plane, entropy_of_ids_bits, require_finite

_INT64_LIMIT = 2**63


def _renumber(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map the values of a 1-D int tensor to 0..K-1 (equal values, equal ids); return them and K."""
    _, inverse = torch.unique(ids, return_inverse=True)
    return inverse, int(inverse.max()) + 1


def row_ids(codes: torch.Tensor) -> torch.Tensor:
    """Ids 0..K-1 of the K distinct rows of an int64 matrix (N, d): equal rows, equal ids.

    Exact: the columns are packed into one int64 in mixed radix, renumbering whenever
    the next column would overflow (no hashing, no loop over samples).
    """
    codes = codes - codes.min(dim=0).values
    ids, size = torch.zeros_like(codes[:, 0]), 1
    for col, radix in zip(codes.T, (codes.max(dim=0).values + 1).tolist()):
        if size * radix >= _INT64_LIMIT:
            ids, size = _renumber(ids)
            if size * radix >= _INT64_LIMIT:
                col, radix = _renumber(col)
        ids, size = ids * radix + col, size * radix
    return _renumber(ids)[0]


def binned_plane(codes: Sequence[torch.Tensor], mi_set: MISet) -> Plane:
    """Plug-in (I(X;T), I(T;Y)) in bits for layers already discretised to int64 bin codes (N, d_l)."""
    n = mi_set.n
    h_x, h_y = mi_set.h_x, mi_set.h_y
    ixt, ity = [], []
    for layer_codes in codes:
        t = row_ids(layer_codes)  # ids < n, so outer * n + t is an exact joint id
        h_t = entropy_of_ids_bits(t)
        ixt.append(h_t - (entropy_of_ids_bits(mi_set.x_ids * n + t) - h_x))
        ity.append(h_t - (entropy_of_ids_bits(mi_set.y * n + t) - h_y))
    # Exact answers are >= 0; clamp round-off such as -1e-16.
    return np.maximum(np.array(ixt), 0.0), np.maximum(np.array(ity), 0.0)



@dataclass(frozen=True)
class FixedBinning(Estimator):
    """IDNNs (Shwartz-Ziv & Tishby) binning: ``bins`` equally spaced EDGES on [low, high].

    ``bins`` counts edges, as IDNNs' ``np.linspace(-1, 1, 30)``: bins-1 equal intervals
    [e_k, e_{k+1}). Each value gets ``np.digitize(value, edges)``, so every value >= ``high``
    lands in one top cell (faithfully: ReLU activations above ``high`` are not resolved) and
    every value < ``low`` in one bottom cell. (IDNNs then looks up ``edges[index - 1]``,
    which would merge that bottom cell into the top one; that wrap-around is not copied.)
    Edges take the activations' dtype (IDNNs compares in float32). Activations must be finite.
    """

    bins: int = 30
    low: float = -1.0
    high: float = 1.0

    kind: ClassVar[str] = "binning_fixed"
    pools: ClassVar[bool] = True
    summary: ClassVar[str] = "IDNNs binning: `bins` edges linspace(low, high); values >= high share the top bin"

    def validate(self) -> None:
        if self.bins < 2:
            raise UserError(f"estimators.binning_fixed.bins must be >= 2 (it counts edges); got {self.bins}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise UserError(f"estimators.binning_fixed needs finite low < high; got low={self.low}, high={self.high}")

    @torch.no_grad()
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "binning")
        edges = np.linspace(self.low, self.high, self.bins)
        codes = [torch.bucketize(h, torch.as_tensor(edges, dtype=h.dtype, device=h.device), right=True)
                 for h in layers]
        return {self.kind: binned_plane(codes, mi_set)}


@dataclass(frozen=True)
class Binning(Estimator):
    """ibsgd (Saxe et al.) binning: bin index floor(a / bin_size), unbounded range.

    Unlike ``FixedBinning`` large ReLU activations keep distinct bins. The division is done
    in the activations' dtype, as ibsgd does. Activations must be finite.
    """

    bin_size: float = 0.07

    kind: ClassVar[str] = "binning"
    pools: ClassVar[bool] = True
    summary: ClassVar[str] = "ibsgd binning: floor(a / bin_size), unbounded range"

    def validate(self) -> None:
        if not (math.isfinite(self.bin_size) and self.bin_size > 0):
            raise UserError(f"estimators.binning.bin_size must be a finite number > 0; got {self.bin_size}")

    @torch.no_grad()
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "binning")
        codes = [torch.floor(h / self.bin_size).long() for h in layers]
        return {self.kind: binned_plane(codes, mi_set)}
