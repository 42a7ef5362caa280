"""Exact plug-in mutual information for discrete layers (quantized networks): no binning at all.

Every distinct activation row of a layer is its own symbol. Float values are mapped to
integer codes **without loss**: the layer's values are replaced by their index among the
layer's sorted distinct values (``torch.unique``), so two values get the same code exactly
when they compare equal (values one ulp apart stay distinct; −0.0 and +0.0 compare equal and
are one symbol). The rows of codes are then counted as in ``Binning`` (``binned_plane``):
I(X;T) = H(T) − H(T|X), H(T|X) = H(X,T) − H(X) from the joint counts (positive when a
repeated input has different rows); I(T;Y) = H(T) − H(T|Y); in bits.

Assumptions: T takes finitely many values (e.g. activations quantized to k bits, binary or
ternary units); finite values (NaN/inf raise ``ValueError``). For continuous activations
every sample is its own symbol and the estimate degenerates to I(X;T) = H(X) (the
"infinite information" of a deterministic continuous layer): use a binning, KDE or kNN
estimator there.

Bias: exact for the empirical distribution of the N samples (N equiprobable inputs, or the
given multiset of inputs). Against a population distribution the plug-in entropies are
biased downward and the MI upward (about (K_T − 1)(C − 1)/(2N ln 2) bits for I(T;Y) when
independent, K_T distinct rows); negligible when N ≫ K_T·C.

Parameters: none.
Cost: one sort of the N·d values per layer and the integer row counting of
``binned_plane``: O(N d log(N d)) time, O(N d) memory, on the activations' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ibtui.estimators._torch import torch

import numpy as np

from ibtui.estimators.base import require_finite
from ibtui.estimators.binning import PlugIn, _cpu_codes


def exact_codes(h: torch.Tensor) -> torch.Tensor:
    """Lossless int64 codes of a layer (N, d): the index of each value among the layer's distinct values."""
    _, inverse = torch.unique(h.reshape(-1), sorted=True, return_inverse=True)
    return inverse.reshape(h.shape)



@dataclass(frozen=True)
class Discrete(PlugIn):
    """Exact plug-in MI of a discrete layer: each distinct activation row is one symbol (see module docstring)."""

    kind: ClassVar[str] = "discrete"
    summary: ClassVar[str] = "exact plug-in MI for discrete (quantized) layers: each distinct row is a symbol"

    def discretise(self, layers: Sequence[torch.Tensor]) -> list[np.ndarray]:
        require_finite(layers, "the discrete estimator")
        return _cpu_codes([exact_codes(h) for h in layers])
