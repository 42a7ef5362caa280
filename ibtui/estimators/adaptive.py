"""Adaptive ("equal-mass", entropy-based) binning of Chelombiev, Houghton & O'Donnell (ICLR 2019).

Definition (as in the paper's public code, ``set_up_bins(..., maxentropy=True)`` of
github.com/ivansche/adaptive_estimators): at each measured epoch and for each layer
separately, the activations of **all units of the layer are pooled** (N·d values), their
**distinct (unique) values** are sorted, u_0 < u_1 < ... < u_{U-1}, and the bin edges are
the unique values of ranks floor(k·U/B), k = 0..B-1. Every unit of the layer uses these same
edges. A value of rank r (its position among the unique values) thus falls in bin
#{k ≥ 1 : floor(k·U/B) ≤ r}: bin k holds the unique values of ranks floor(k·U/B) to
floor((k+1)·U/B) − 1, i.e. floor(U/B) or ceil(U/B) distinct levels. When all values are
distinct (U = N·d) the bins are equal-mass: each holds about N·d/B values. When values
repeat (saturated tanh units at ±1, ReLU zeros) a bin's mass follows the unique levels, not
the sample counts, exactly as in the paper ("each bin contains the same number of unique
observed activation levels"). With U < B every distinct value gets its own bin.

Then the plug-in information plane of the binned rows, exactly as ``Binning``
(``binned_plane``): I(X;T) = H(T) − H(T|X), I(T;Y) = H(T) − H(T|Y), in bits.

Deviations from the public code, on purpose: edges are taken from exact integer ranks
(floor(k·U/B)) rather than ``int(k*(U/B))`` in floating point (identical except for
round-off); the public code's extra edge at the maximum value puts that single largest value
in a bin of its own (B+1 occupied bins) and its ReLU variant excludes the value 0 from the
unique list (zeros get their own bin); here exactly B bins (or U if U < B) are used and no
value is special, so the estimator needs no knowledge of the activation function.

Assumptions: finite activations (NaN/inf raise ``ValueError``). Because the bins depend only
on ranks, the estimate is **exactly invariant** under any strictly increasing map applied to
all activations of a layer (the same map for every unit).

Bias: the binned layer B(T) is a function of T, so the estimated quantities are
data-processing lower bounds I(X;B(T)) ≤ I(X;T) and I(B(T);Y) ≤ I(T;Y). As plug-in
estimates from N samples they are exact for the empirical distribution (N equiprobable
inputs); against a population they are biased upward for I(T;Y) (about
(K_T − 1)(C − 1)/(2N ln 2) bits when T and Y are independent, K_T occupied cells) and
I(X;T) ≤ log2 N saturates when every sample has its own cell.

Parameters: ``bins`` (B ≥ 2, default 30 as in the paper).
Cost: one sort of the N·d pooled values per layer (O(N d log(N d))), then the integer
row counting of ``binned_plane`` (O(N d)); memory O(N d). Runs on the activations' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ibtui.estimators._torch import torch

import numpy as np

from ibtui.estimators.base import check_int, require_finite
from ibtui.estimators.binning import PlugIn, _cpu_codes


def adaptive_codes(h: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin codes (int64, same shape as ``h`` (N, d)) of the layer's pooled unique-value quantile bins."""
    unique, rank = torch.unique(h.reshape(-1), sorted=True, return_inverse=True)
    n_unique = unique.numel()
    # Integer ranks floor(k·U/B) of the inner edges k = 1..B-1 (exact, no float round-off).
    edge_ranks = (torch.arange(1, bins, device=h.device, dtype=torch.int64) * n_unique) // bins
    return torch.bucketize(rank.reshape(h.shape), edge_ranks, right=True)



@dataclass(frozen=True)
class AdaptiveBinning(PlugIn):
    """Chelombiev et al. 2019 adaptive binning: ``bins`` bins of equally many unique levels per layer.

    See the module docstring for the exact definition (per layer, all units pooled, quantiles
    of the unique values), its bias (data-processing lower bound, plug-in) and cost.
    """

    bins: int = 30

    kind: ClassVar[str] = "binning_adaptive"
    summary: ClassVar[str] = ("Chelombiev et al. adaptive binning: `bins` equal-mass bins at quantiles "
                              "of each layer's unique values")

    def validate(self) -> None:
        check_int("estimators.binning_adaptive.bins", self.bins, 2)

    def discretise(self, layers: Sequence[torch.Tensor]) -> list[np.ndarray]:
        require_finite(layers, "adaptive binning")
        return _cpu_codes([adaptive_codes(h, self.bins) for h in layers])
