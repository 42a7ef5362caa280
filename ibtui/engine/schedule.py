"""Epoch schedules: which epochs get their information plane measured.

Epoch 0 is the untrained network; epoch e is the network after e epochs of training.
Every schedule measures epoch 0 and the last epoch.

Static kinds (the set of epochs is known in advance):
- ``every``: every epoch.
- ``every_n``: every ``every``-th epoch (the study's simple skip).
- ``log``: IDNNs' log2-spaced epochs, ``unique(int(logspace(0, log2(E+1), points, base=2))) - 1``
  (400 points over 8000 epochs give 274 epochs, as in IDNNs).
- ``stepped``: ibsgd's schedule: all epochs < 20, every 5th < 100, every 20th < 2000, then every 100th.

Adaptive kinds (the study's Figure 3.6), driven by the *distance* between two consecutive
measurements: the largest Euclidean move, in bits, of any layer on the chosen plane.
- ``delta_approx``: measure again after ``skip`` epochs; if the plane moved more than ``delta``
  halve the skip, else double it (capped at ``max_skip``).
- ``delta_exact``: the engine keeps the (tiny) weights of the skipped epochs; when the plane
  moved more than ``delta`` it bisects back, measuring midpoints from those weights, until every
  gap moved at most ``delta`` or is one epoch wide. The next skip is the last gap kept, or twice
  the skip when no bisection was needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ibtui.config import ScheduleConfig


def static_epochs(kind: str, epochs: int, every: int = 10, points: int = 400) -> np.ndarray:
    """Sorted unique epochs in [0, epochs] measured by a static schedule (always 0 and ``epochs``)."""
    e = np.arange(epochs + 1)
    if kind == "every":
        chosen = e
    elif kind == "every_n":
        chosen = e[e % every == 0]
    elif kind == "log":
        chosen = np.unique(np.logspace(0, np.log2(epochs + 1), points, base=2).astype(np.int64)) - 1
    elif kind == "stepped":
        keep = (e < 20) | ((e < 100) & (e % 5 == 0)) | ((e < 2000) & (e % 20 == 0)) | (e % 100 == 0)
        chosen = e[keep]
    else:
        raise ValueError(f"not a static schedule: {kind}")
    return np.unique(np.concatenate([[0, epochs], chosen]).clip(0, epochs)).astype(np.int64)


def plane_distance(previous: np.ndarray, current: np.ndarray) -> float:
    """Largest Euclidean move (bits) of any layer between two planes of shape (L, 2)."""
    return float(np.max(np.linalg.norm(np.asarray(current) - np.asarray(previous), axis=-1)))


@dataclass
class Schedule:
    """Decides the next measured epoch. ``decide`` returns (next epoch or None when done, decision)."""

    cfg: ScheduleConfig
    epochs: int
    skip: int = field(init=False)
    _static: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.skip = self.cfg.initial_skip
        if not self.adaptive:
            self._static = static_epochs(self.cfg.kind, self.epochs, self.cfg.every, self.cfg.points)

    @property
    def adaptive(self) -> bool:
        return self.cfg.kind in ("delta_exact", "delta_approx")

    @property
    def keeps_skipped_weights(self) -> bool:
        return self.cfg.kind == "delta_exact"

    def planned(self) -> np.ndarray | None:
        """The full list of epochs for static schedules, None for adaptive ones."""
        return self._static

    def first(self) -> int:
        return 0

    def should_bisect(self, lo: int, hi: int, distance: float) -> int | None:
        """delta_exact only: the midpoint epoch to measure between ``lo`` and ``hi``, or None."""
        if self.cfg.kind != "delta_exact" or hi - lo <= 1 or distance <= self.cfg.delta:
            return None
        return (lo + hi) // 2

    def decide(self, epoch: int, distance: float | None, last_gap: int | None = None) -> tuple[int | None, dict]:
        """After measuring ``epoch``: the next epoch to measure and the decision (for the events).

        distance: plane distance to the previous measurement (None at the first one; for
        delta_exact, the distance across the last gap kept after bisection);
        last_gap: delta_exact only, the width of that last gap.
        """
        if epoch >= self.epochs:
            return None, {"kind": self.cfg.kind, "decision": "end", "skip": 0, "distance": distance}
        if not self.adaptive:
            assert self._static is not None
            nxt = int(self._static[np.searchsorted(self._static, epoch, side="right")])
            return nxt, {"kind": self.cfg.kind, "decision": "fixed", "skip": nxt - epoch, "distance": distance}
        if distance is None:
            decision = "start"
        elif self.cfg.kind == "delta_approx":
            if distance > self.cfg.delta:
                self.skip, decision = max(1, self.skip // 2), "halve"
            else:
                self.skip, decision = min(self.cfg.max_skip, self.skip * 2), "double"
        elif last_gap is not None and last_gap < self.skip:
            self.skip, decision = max(1, last_gap), "shrink"
        elif distance > self.cfg.delta:
            self.skip, decision = max(1, self.skip // 2), "halve"
        else:
            self.skip, decision = min(self.cfg.max_skip, self.skip * 2), "double"
        nxt = min(epoch + self.skip, self.epochs)
        return nxt, {"kind": self.cfg.kind, "decision": decision, "skip": self.skip, "distance": distance}
