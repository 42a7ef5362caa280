"""The estimator interface shared by the engine, the TUI and Python users.

Every estimator is a small frozen dataclass holding its parameters. Calling
``estimate(layers, mi_set)`` on the activations of L layers returns one or more
*planes*: for each plane name, the pair ``(ixt, ity)`` of float64 numpy arrays of
shape (L,), I(X;T) and I(T;Y) in **bits**, one value per layer.

Assumptions common to all estimators:
- ``layers[l]`` is a float tensor of shape (N, d_l): the activations of layer l
  for the N samples of the MI set, all on one device (any device).
- ``mi_set.x_ids[n]`` identifies sample n's input (equal ids = identical inputs),
  so H(T|X) is computed for real and datasets may repeat inputs.
- ``mi_set.y[n]`` is sample n's label in 0..C-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from ibtui.errors import ParameterError
from ibtui.estimators._torch import torch

LN2 = math.log(2.0)

MAX_COUNT = 1 << 20
"""Largest count-like estimator parameter (bins, draws, steps, widths, chunk sizes): 1,048,576.
Beyond it a value only allocates or loops without end (a bin count of 1e12 is 8 TB of edges)."""

MAX_SEED = 2**63 - 1
"""Largest seed (torch generators take 64-bit seeds)."""


def check_int(where: str, value: Any, low: int, high: int = MAX_COUNT) -> None:
    """ParameterError unless ``value`` is an integer (not a bool) from ``low`` to ``high``;
    ``where`` names it (``estimators.ksg.k``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{where} must be an integer; got {value!r}")
    if value < low:
        raise ParameterError(f"{where} must be >= {low}; got {value}")
    if value > high:
        raise ParameterError(f"{where} must be <= {high}; got {value}")


def check_samples(where: str, k: int, n: int) -> None:
    """ParameterError unless a kNN estimator's ``k`` leaves neighbours in a set of ``n`` samples."""
    if k >= n:
        raise ParameterError(f"{where} = {k} needs more than {k} samples; the MI set has {n}")

Plane = tuple[np.ndarray, np.ndarray]
"""(ixt, ity): float64 arrays of shape (L,), in bits."""


def plug_in_entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Plug-in (maximum-likelihood) entropy in bits of a histogram of counts (last dim)."""
    counts = counts.to(torch.float64)
    total = counts.sum(dim=-1, keepdim=True)
    p = counts / total
    logp = torch.where(p > 0, torch.log2(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return -(p * logp).sum(dim=-1)


def entropy_of_ids_bits(ids: torch.Tensor) -> float:
    """Plug-in entropy in bits of the empirical distribution of integer ids (1-D tensor)."""
    _, counts = torch.unique(ids, return_counts=True)
    return float(plug_in_entropy_bits(counts))


def require_finite(layers: Sequence[torch.Tensor], who: str) -> None:
    """ValueError naming the first layer with NaN/inf activations (estimators need finite values)."""
    for i, h in enumerate(layers):
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"layer {i} has NaN/inf activations; {who} needs finite values")


@dataclass(frozen=True)
class MISet:
    """The samples on which mutual information is measured.

    x_ids: (N,) int64, id of each sample's distinct input row (0..n_inputs-1).
    y: (N,) int64 labels in 0..n_classes-1.
    x: (N, D) float inputs, for estimators that treat X as a continuous vector (kNN); optional.
    """

    x_ids: torch.Tensor
    y: torch.Tensor
    n_classes: int
    x: torch.Tensor | None = None

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, device: torch.device | str = "cpu") -> "MISet":
        """Build from an input matrix (N, D) and labels (N,); identical rows of x share an id."""
        x = np.ascontiguousarray(np.asarray(x).reshape(len(x), -1))
        _, inverse = np.unique(x, axis=0, return_inverse=True)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        n_classes = int(y.max()) + 1 if len(y) else 0
        return cls(
            x_ids=torch.as_tensor(inverse.reshape(-1).astype(np.int64), device=device),
            y=torch.as_tensor(y, device=device),
            n_classes=n_classes,
            x=torch.as_tensor(x, dtype=torch.float32, device=device),
        )

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def h_x(self) -> float:
        """Plug-in entropy of the inputs in bits (upper bound for I(X;T) of plug-in estimators)."""
        return entropy_of_ids_bits(self.x_ids)

    @property
    def h_y(self) -> float:
        """Plug-in entropy of the labels in bits (upper bound for I(T;Y) of plug-in estimators)."""
        return entropy_of_ids_bits(self.y)

    def pooled(self, times: int) -> "MISet":
        """The set repeated ``times`` times (ids, labels and inputs tiled): the MI set of activations
        stacked from ``times`` networks or epochs, each input once per copy."""
        return MISet(self.x_ids.repeat(times), self.y.repeat(times), self.n_classes,
                     None if self.x is None else self.x.repeat(times, 1))

    def to(self, device: torch.device | str) -> "MISet":
        return MISet(self.x_ids.to(device), self.y.to(device), self.n_classes,
                     None if self.x is None else self.x.to(device))


def conditional_cap_bits(mi_set: MISet) -> float:
    """The largest H(T|X) a plug-in estimate can reach on ``mi_set``: Σ_x p(x) log2 n_x (bits),
    n_x the number of samples of input x (log2 r when every input appears r times; 0 when once)."""
    _, counts = torch.unique(mi_set.x_ids, return_counts=True)
    counts = counts.to(torch.float64)
    return float((counts * torch.log2(counts)).sum() / counts.sum())


@dataclass(frozen=True)
class PooledPlane:
    """A plug-in plane of pooled samples (each input several times, e.g. noisy passes or branched
    networks), in bits per layer: I(X;T), I(T;Y), the estimated H(T|X) and its cap (the largest value
    a plug-in estimate can take on these samples, ``conditional_cap_bits``). At the cap the estimate
    is saturated: the true H(T|X) may be larger, so I(X;T) = H(T) − H(T|X) is not resolved."""

    ixt: np.ndarray
    ity: np.ndarray
    h_t_x: np.ndarray
    cap: float

    @property
    def saturated(self) -> np.ndarray:
        """(L,) bool: layers whose H(T|X) sits at the cap."""
        return self.h_t_x >= self.cap - 1e-9 * max(1.0, self.cap)


@dataclass(frozen=True)
class Estimator:
    """Base class: subclasses are frozen dataclasses of parameters.

    kind: registry name (the key under ``[estimators]`` in a preset).
    planes: names of the planes ``estimate`` returns.
    """

    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_centres: ClassVar[bool] = False
    """True when ``estimate`` wants, per layer of a noisy network, (m, N, d) pre-noise draws."""
    pools: ClassVar[bool] = False
    """True when I(X;T) counts repeated inputs with different T (H(T|X) > 0), so activations
    pooled over epochs or seeds ("as if random") are meaningful input."""
    thread_safe: ClassVar[bool] = True
    """True when ``estimate`` touches no process-wide state (the global RNG, say), so the engine may
    run it for several members at once in threads."""

    @property
    def planes(self) -> tuple[str, ...]:
        return (self.kind,)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ibtui.errors.ParameterError`` (a ValueError; one line at the front doors) for
        impossible parameters. Called on construction."""

    def validate_for(self, mi_set: MISet) -> None:
        """Raise ParameterError when the parameters cannot work on ``mi_set`` (a k as large as the
        set, say). The engine calls it for every MI set before measuring (``check_estimators``)."""

    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        raise NotImplementedError

    def estimate_pooled(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, PooledPlane]:
        """Pooling estimators (``pools``): the planes with H(T|X) and its cap, for samples that repeat inputs."""
        raise NotImplementedError(f"{self.kind} does not estimate H(T|X) from repeated inputs")


def check_estimators(estimators: Sequence[Estimator], mi_sets: Sequence[MISet]) -> None:
    """Every estimator's ``validate_for`` on every (distinct) MI set: ParameterError before any work."""
    for mi_set in {id(m): m for m in mi_sets}.values():
        for est in estimators:
            est.validate_for(mi_set)
