"""The 12-bit task, generated (no file): see ``ibtui.engine.data`` for the rule and where it comes from."""

from __future__ import annotations

import numpy as np

from ibtui.engine.data.dataset import Dataset

_PHI = (1.0 + 5.0**0.5) / 2.0
_U = np.array(
    [
        (0, -1, -_PHI),
        (-1, -_PHI, 0),
        (0, -1, _PHI),
        (1, -_PHI, 0),
        (-_PHI, 0, 1),
        (0, 1, -_PHI),
        (-1, _PHI, 0),
        (1, _PHI, 0),
        (_PHI, 0, 1),
        (0, 1, _PHI),
        (_PHI, 0, -1),
        (-_PHI, 0, -1),
    ],
    dtype=np.float64,
)
TWELVE_BIT_VERTICES: np.ndarray = _U / np.linalg.norm(_U, axis=1, keepdims=True)
"""(12, 3) float64: unit vector of the icosahedron vertex carrying column j of the 12-bit inputs."""
TWELVE_BIT_VERTICES.flags.writeable = False


def twelve_bit_patterns() -> np.ndarray:
    """(4096, 12) uint8: row i is i in binary, most significant bit first (var_u's order)."""
    i = np.arange(4096, dtype=np.int64)[:, None]
    shifts = np.arange(11, -1, -1, dtype=np.int64)[None, :]
    return ((i >> shifts) & 1).astype(np.uint8)


def twelve_bit_score(x: np.ndarray) -> np.ndarray:
    """f(x) = n(x) + ‖Σ_j x_j v_j‖ for patterns x of shape (..., 12), float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.sum(axis=-1) + np.linalg.norm(x @ TWELVE_BIT_VERTICES, axis=-1)


def _twelve_bit_threshold(f: np.ndarray) -> float:
    """θ among the sorted distinct values of f making mean(f > θ) closest to 0.5 (ties: smaller θ)."""
    candidates = np.unique(f)
    p = (f[None, :] > candidates[:, None]).mean(axis=1)
    return float(candidates[int(np.argmin(np.abs(p - 0.5)))])


def make_twelve_bit() -> Dataset:
    """The 12-bit task: 4096 patterns, labels y = [n + ‖Σ x_j v_j‖ > θ] (see the module docstring)."""
    patterns = twelve_bit_patterns()
    f = np.round(twelve_bit_score(patterns), 9)
    theta = _twelve_bit_threshold(f)
    y = (f > theta).astype(np.int64)
    x = patterns.astype(np.float32)
    p1 = float(y.mean())
    return Dataset(
        name="12bit",
        x=x,
        y=y,
        n_classes=2,
        is_test=None,
        description=(
            f"12-bit task: 4096 patterns, p(y=1)={p1:.4f}, y = [#ones + |sum of set icosahedron "
            f"vertices| > {theta:.4f}]"
        ),
    )
