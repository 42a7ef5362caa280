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
from itertools import pairwise
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import Estimator, check_int, MISet, Plane, PooledPlane, conditional_cap_bits, require_finite

_INT64_LIMIT = 2**63
_FLOAT_EXACT = 2**53  # integers up to this are exact in float64
MIN_BIN_SIZE = 1e-30
"""Smallest bin size: float32 activations are divided by it in float32 (tiny normal 1.2e-38)."""


def _bincount_limit(n: int) -> int:
    """Largest key range counted with ``np.bincount`` (O(N + range)) instead of a sort (O(N log N))."""
    return 16 * n + 4096


def _dense(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, counts) of a 1-D int array: ids 0..K-1 in the order of the values (equal values, equal
    ids) and the K counts, in that order."""
    if len(values) and values.min() >= 0 and values.max() < _bincount_limit(len(values)):
        counts = np.bincount(values)
        present = counts > 0
        return (np.cumsum(present) - 1)[values], counts[present]
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return inverse.reshape(-1).astype(np.int64, copy=False), counts


def _pack_rows(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """(ids, size) for an int64 matrix (N, d): one int64 id per row, 0 <= id < size, equal rows ⇔
    equal ids. Exact: mixed radix over the columns' ranges; when the next column would overflow
    int64, the ids so far are renumbered to 0..K-1 first (and a column wider than int64 itself)."""
    n, d = codes.shape
    if n == 0 or d == 0:
        return np.zeros(n, dtype=np.int64), 1
    ids, size = np.zeros(n, dtype=np.int64), 1
    for k, (lo, hi) in enumerate(zip(codes.min(axis=0).tolist(), codes.max(axis=0).tolist())):
        radix = hi - lo + 1  # a Python int: no overflow
        if radix >= _INT64_LIMIT:
            col, counts = _dense(codes[:, k])
            radix = len(counts)
        else:
            col = codes[:, k] - lo  # exact: the true difference is < 2**63
        if size * radix >= _INT64_LIMIT:
            ids, counts = _dense(ids)
            size = len(counts)
        ids, size = ids * radix + col, size * radix
    return ids, size


def _row_keys(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """(ids, size) as ``_pack_rows`` for integer codes (N, d), given as int64 or as integer-valued
    floats. The usual case is one float64 matrix-vector product: one radix R = max − min + 1 for
    all columns, ids Σ_j (c_j − min) R^(d−1−j) < R^d; exact because every partial sum is an
    integer below 2**53 (checked). Otherwise exact int64 packing (``_pack_rows``)."""
    n, d = codes.shape
    if n == 0 or d == 0:
        return np.zeros(n, dtype=np.int64), 1
    if codes.dtype.kind == "f" and float(np.abs(codes).max()) >= _FLOAT_EXACT:
        # codes too large for int64 (tiny bins): each column's distinct values, renumbered in order
        codes = np.stack([np.unique(codes[:, k], return_inverse=True)[1].reshape(-1) for k in range(d)], axis=1)
    low, high = int(codes.min()), int(codes.max())
    radix = high - low + 1
    weights = [radix**k for k in range(d - 1, -1, -1)]  # Python ints
    if max(-low, high) * sum(weights) < _FLOAT_EXACT:  # bounds |Σ_j c_j w_j| and all partial sums
        ids = codes @ np.array(weights, dtype=np.float64)
        ids -= low * sum(weights)  # exact: both integers below 2**53
        return ids.astype(np.int64), radix**d
    return _pack_rows(codes.astype(np.int64, copy=False))


def _entropies_bits(counts: np.ndarray, bounds: np.ndarray, n: int) -> list[float]:
    """Plug-in entropies in bits of the histograms counts[bounds[k]:bounds[k+1]] (each summing to n)."""
    p = counts / n
    terms = -(p * np.log2(p))
    bounds = bounds.tolist()
    return [float(terms[lo:hi].sum()) for lo, hi in pairwise(bounds)]  # (numpy's pairwise summation)


def _run_counts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(counts, bounds): the lengths of the runs of equal values in each row of a (R, N) array of
    sorted rows, row r's runs at counts[bounds[r]:bounds[r+1]]."""
    n_rows, n = sorted_keys.shape
    starts = np.empty(sorted_keys.shape, dtype=bool)
    starts[:, 0] = True
    np.not_equal(sorted_keys[:, 1:], sorted_keys[:, :-1], out=starts[:, 1:])
    at = np.flatnonzero(starts)
    return np.diff(at, append=starts.size), np.searchsorted(at, np.arange(n_rows + 1) * n)


def _joint_entropies_bits(keys: np.ndarray, sizes: Sequence[int], given: np.ndarray, n_given: int,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(H(T), H(T, G)) in bits per layer, from the layers' row ids (``_row_keys``) and the ids
    0..n_given-1 of G, counting the keys id·|G| + G of all layers at once: with one bincount for
    the layers whose key range is small, with one sort per row for the others (int32 where the
    range allows). Sorted, equal keys are runs of (T, G) and, G being the lowest digit, runs of
    keys // |G| are runs of T."""
    n_layers, n = keys.shape
    sizes = list(sizes)
    too_wide = [layer for layer in range(n_layers) if sizes[layer] * n_given >= _INT64_LIMIT]
    if too_wide:
        keys = keys.copy()
        for layer in too_wide:
            keys[layer], counts = _dense(keys[layer])  # < N, and N · n_given <= N² fits
            sizes[layer] = len(counts)
    joint = keys * n_given + given
    h_t, h_joint = np.zeros(n_layers), np.zeros(n_layers)
    ranges = [size * n_given for size in sizes]
    small = [l for l in range(n_layers) if ranges[l] <= _bincount_limit(n)]
    if small:
        offsets = np.cumsum([0] + [ranges[l] for l in small])
        counts = np.bincount((joint[small] + offsets[:-1, None]).ravel(), minlength=int(offsets[-1]))
        t_counts = counts.reshape(-1, n_given).sum(axis=1) if n_given > 1 else counts
        for histogram, offsets_of, out in ((counts, offsets, h_joint), (t_counts, offsets // n_given, h_t)):
            present = np.flatnonzero(histogram)
            out[small] = _entropies_bits(histogram[present], np.searchsorted(present, offsets_of), n)
    for dtype in (np.int32, np.int64):
        rows = [l for l in range(n_layers) if l not in small and (ranges[l] <= 2**31) == (dtype is np.int32)]
        if not rows:
            continue
        sorted_keys = np.sort(joint[rows].astype(dtype, copy=False), axis=1)
        counts, bounds = _run_counts(sorted_keys)
        h_joint[rows] = _entropies_bits(counts, bounds, n)
        if n_given > 1:
            counts, bounds = _run_counts(sorted_keys // n_given)
        h_t[rows] = _entropies_bits(counts, bounds, n)
    return h_t, h_joint


def _entropies_of_codes(codes: Sequence[np.ndarray], mi_set: MISet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H(T), H(T|X), H(T|Y)) in bits per layer, for numpy integer codes (N, d_l), int64 or
    integer-valued floats: H(T|X) = H(X,T) − H(X) and H(T|Y) = H(T,Y) − H(Y) from the joint counts."""
    n = mi_set.n
    x_ids, x_counts = _dense(mi_set.x_ids.detach().cpu().numpy())
    y_ids, y_counts = _dense(mi_set.y.detach().cpu().numpy())
    keys, sizes = np.empty((len(codes), n), dtype=np.int64), []
    for row, layer_codes in zip(keys, codes):
        row[:], size = _row_keys(layer_codes)
        sizes.append(size)
    h_t, h_ty = _joint_entropies_bits(keys, sizes, y_ids, len(y_counts))
    h_t_y = h_ty - _entropies_bits(y_counts, np.array([0, len(y_counts)]), n)[0]
    if len(x_counts) == n:  # every input once: H(X,T) = H(X), H(T|X) = 0
        h_t_x = np.zeros(len(codes))
    else:
        h_tx = _joint_entropies_bits(keys, sizes, x_ids, len(x_counts))[1]
        h_t_x = h_tx - _entropies_bits(x_counts, np.array([0, len(x_counts)]), n)[0]
    # Exact answers satisfy 0 <= H(T|·) <= H(T); clamp round-off such as -1e-16.
    return h_t, np.clip(h_t_x, 0.0, h_t), np.clip(h_t_y, 0.0, h_t)


def _plane_of_codes(codes: Sequence[np.ndarray], mi_set: MISet) -> Plane:
    """``binned_plane`` for numpy integer codes (N, d_l), int64 or integer-valued floats."""
    h_t, h_t_x, h_t_y = _entropies_of_codes(codes, mi_set)
    return h_t - h_t_x, h_t - h_t_y


def row_ids(codes: torch.Tensor) -> torch.Tensor:
    """Ids 0..K-1 of the K distinct rows of an int64 matrix (N, d): equal rows, equal ids.

    Exact: the columns are packed into one int64 in mixed radix, renumbering whenever
    the next column would overflow (no hashing, no loop over samples). Counted on the CPU.
    """
    packed, _ = _pack_rows(codes.detach().cpu().numpy().astype(np.int64, copy=False))
    return torch.as_tensor(_dense(packed)[0], device=codes.device)


def binned_plane(codes: Sequence[torch.Tensor], mi_set: MISet) -> Plane:
    """Plug-in (I(X;T), I(T;Y)) in bits for layers already discretised to int64 bin codes (N, d_l).

    Counted exactly on the CPU (codes of any device are copied there): each layer's rows are packed
    into one integer id (``_row_keys``), then H(T) and H(T,Y) of all layers are read off the
    counts of the keys (T, Y) (``_joint_entropies_bits``), likewise H(T,X) when inputs repeat.
    With all inputs distinct H(X,T) = H(X), so I(X;T) = H(T) exactly.
    """
    return _plane_of_codes([c.detach().cpu().numpy().astype(np.int64, copy=False) for c in codes], mi_set)


def _edge_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.searchsorted(edges, values, side="right")`` (the number of edges <= each value; as
    ``torch.bucketize(right=True)``) for finite values and nearly equally spaced increasing edges,
    in O(1) per value: a guess from the spacing, then the values whose guess i fails
    edges[i-1] <= value < edges[i] are moved one edge at a time until it holds, which makes it exact."""
    lower = np.concatenate(([-np.inf], edges)).astype(edges.dtype)  # lower[i] = edges[i - 1]
    upper = np.concatenate((edges, [np.inf])).astype(edges.dtype)  # upper[i] = edges[i]
    step = (float(edges[-1]) - float(edges[0])) / max(len(edges) - 1, 1)
    with np.errstate(over="ignore"):  # a huge quotient is clipped below
        guess = np.floor((values - float(edges[0])) / step) if step > 0 else np.zeros(values.shape)
    index = np.clip(guess, -1, len(edges) - 1, out=guess).astype(np.int64).reshape(-1)
    index += 1
    flat = values.reshape(-1)
    wrong = np.flatnonzero((flat >= upper.take(index)) | (flat < lower.take(index)))
    while len(wrong):
        at, value = index[wrong], flat[wrong]
        at += value >= upper.take(at)
        at -= value < lower.take(at)
        index[wrong] = at
        wrong = wrong[(value >= upper.take(at)) | (value < lower.take(at))]
    return index.reshape(values.shape)


def _numpy_layers(layers: Sequence[torch.Tensor], who: str) -> list[np.ndarray] | None:
    """The layers as float32/float64 numpy arrays (sharing memory) when all are such CPU tensors,
    else None; after the finiteness check of ``require_finite``, done here in numpy (faster)."""
    if not all(h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64) for h in layers):
        require_finite(layers, who)
        return None
    arrays = [h.detach().numpy() for h in layers]
    if not all(np.isfinite(a).all() for a in arrays):
        require_finite(layers, who)  # raises, naming the layer
    return arrays


@dataclass(frozen=True)
class PlugIn(Estimator):
    """Base of the plug-in estimators of discretised layers (the binning family, ``Discrete``):
    ``discretise`` turns each layer into integer codes (N, d_l); the plane is counted from them.
    They estimate H(T|X) from repeated inputs, so they can pool samples (``estimate_pooled``)."""

    pools: ClassVar[bool] = True

    def discretise(self, layers: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Integer codes (N, d_l) per layer, as numpy int64 or integer-valued floats."""
        raise NotImplementedError

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        return {self.kind: _plane_of_codes(self.discretise(layers), mi_set)}

    @no_grad
    def estimate_pooled(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, PooledPlane]:
        h_t, h_t_x, h_t_y = _entropies_of_codes(self.discretise(layers), mi_set)
        return {self.kind: PooledPlane(h_t - h_t_x, h_t - h_t_y, h_t_x, conditional_cap_bits(mi_set))}


def _cpu_codes(codes: Sequence[torch.Tensor]) -> list[np.ndarray]:
    return [c.detach().cpu().numpy().astype(np.int64, copy=False) for c in codes]


@dataclass(frozen=True)
class FixedBinning(PlugIn):
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
    summary: ClassVar[str] = "IDNNs binning: `bins` edges linspace(low, high); values >= high share the top bin"

    def validate(self) -> None:
        check_int("estimators.binning_fixed.bins", self.bins, 2)  # it counts edges
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ParameterError(f"estimators.binning_fixed needs finite low < high; got low={self.low}, high={self.high}")

    def discretise(self, layers: Sequence[torch.Tensor]) -> list[np.ndarray]:
        edges = np.linspace(self.low, self.high, self.bins)
        arrays = _numpy_layers(layers, "binning")
        if arrays is None:
            return _cpu_codes([torch.bucketize(h, torch.as_tensor(edges, dtype=h.dtype, device=h.device), right=True)
                               for h in layers])
        # The same codes on the CPU: the index i with edges[i-1] <= a < edges[i], edges in a's dtype.
        return [_edge_index(a, edges.astype(a.dtype)) for a in arrays]


@dataclass(frozen=True)
class Binning(PlugIn):
    """ibsgd (Saxe et al.) binning: bin index floor(a / bin_size), unbounded range.

    Unlike ``FixedBinning`` large ReLU activations keep distinct bins. The division is done
    in the activations' dtype, as ibsgd does. Activations must be finite.
    """

    bin_size: float = 0.07

    kind: ClassVar[str] = "binning"
    summary: ClassVar[str] = "ibsgd binning: floor(a / bin_size), unbounded range"

    def validate(self) -> None:
        if not (math.isfinite(self.bin_size) and self.bin_size > 0):
            raise ParameterError(f"estimators.binning.bin_size must be a finite number > 0; got {self.bin_size}")
        if not MIN_BIN_SIZE <= self.bin_size <= 1e30:
            raise ParameterError(f"estimators.binning.bin_size must be from {MIN_BIN_SIZE:g} to 1e30 (float32 "
                                 f"activations divide by it); got {self.bin_size}")

    def discretise(self, layers: Sequence[torch.Tensor]) -> list[np.ndarray]:
        arrays = _numpy_layers(layers, "binning")
        with np.errstate(over="ignore"):
            if arrays is None:  # another device: divided there, counted on the CPU (integer-valued floats)
                codes = [torch.floor(h / self.bin_size).double().cpu().numpy() for h in layers]
            else:  # bin_size rounded to the activations' dtype and divided in it, as torch does
                codes = [np.floor(a / a.dtype.type(self.bin_size)) for a in arrays]
        if not all(np.isfinite(c).all() for c in codes):
            raise ParameterError(f"activations / bin_size {self.bin_size:g} overflow: "
                                 "use a larger estimators.binning.bin_size")
        return codes
