"""Epoch schedules: which epochs get their information plane measured.

Convention (used everywhere in ibtui): **epoch n is the network after n epochs of training**;
epoch 0 is the untrained network. Every schedule measures epoch 0 and the last epoch E.

Static kinds (the set of epochs is fixed in advance; each is a rule, never an array of every
epoch, so any number of epochs costs the same memory):
- ``every``: every epoch.
- ``every_n``: every ``every``-th epoch (the study's simple skip).
- ``log``: IDNNs (``idnns/networks/information_network.py``):
  ``np.unique(np.logspace(np.log2(1), np.log2(E), points, dtype=int, base=2)) - 1``; IDNNs takes
  the activations of index j *before* training epoch j, i.e. after j epochs, so these are the
  epochs in our convention (400 points over 8000 epochs: 274 epochs, the last 7999), plus E.
- ``stepped``: ibsgd's 12-bit notebook (``IBnet_SaveActivations.ipynb``, ``do_report``): epoch k
  (0-based) is reported at its *end* when k < 20, k < 100 and k % 5 == 0, k < 2000 and
  k % 20 == 0, or k % 100 == 0; that file holds the network after k + 1 epochs, so the measured
  epochs are {k + 1 : do_report(k)} (1..20, 21, 26, ..., 96, 101, 121, ..., 1981, 2001, 2101, ...),
  plus 0 and E.
- ``stepped_mnist``: the same for ibsgd's ``MNIST_SaveActivations.ipynb`` (every epoch < 20,
  every 5th < 100, every 10th < 200, then every 100th).

Adaptive kinds (the study's Figure 3.6), driven by the *distance* between two consecutive
measurements: the largest Euclidean move, in bits, of any layer on the chosen plane.
- ``delta_approx``: the study's rule: measure again after ``skip`` epochs; if the plane moved
  more than ``delta`` keep the skip, else double it (capped at ``max_skip``; the study has no cap).
- ``delta_halving``: a variant: halve the skip when the plane moved more than ``delta``, else double it.
- ``delta_exact``: the engine keeps the (tiny) weights of the skipped epochs; when the plane
  moved more than ``delta`` it bisects back, measuring midpoints from those weights, until every
  gap moved at most ``delta`` or is one epoch wide. The next skip is the last gap kept, or twice
  the skip when no bisection was needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ibtui.config import ScheduleConfig

REPORT_STEPS: dict[str, tuple[tuple[float, int], ...]] = {
    # (k below this, every this many epochs), in order: ibsgd's do_report(k) for each notebook
    "stepped": ((20, 1), (100, 5), (2000, 20), (math.inf, 100)),
    "stepped_mnist": ((20, 1), (100, 5), (200, 10), (math.inf, 100)),
}
ADAPTIVE = ("delta_approx", "delta_halving", "delta_exact")


def idnns_log_epochs(epochs: int, points: int) -> np.ndarray:
    """IDNNs' measured epochs for ``epochs`` training epochs and ``points`` log2-spaced points,
    as IDNNs computes them (information_network.py), in the after-n-epochs convention."""
    if epochs < 1:
        return np.zeros(1, dtype=np.int64)
    chosen = np.unique(np.logspace(np.log2(1), np.log2(epochs), points, dtype=int, base=2)) - 1
    return chosen.astype(np.int64)


def next_reported(steps: tuple[tuple[float, int], ...], after: int) -> int:
    """The smallest epoch count m > ``after`` with do_report(m − 1) true for ibsgd's ``steps``."""
    low = 0
    for limit, step in steps:
        k = max(low, after)  # m = k + 1 > after  ⇔  k ≥ after
        k = -(-k // step) * step  # do_report tests k % step with the absolute k
        if k < limit:
            return k + 1
        low = limit  # type: ignore[assignment]
    raise AssertionError("the last step has no limit")


def plane_distance(previous: np.ndarray, current: np.ndarray) -> float:
    """Largest Euclidean move (bits) of any layer between two planes of shape (L, 2)."""
    return float(np.max(np.linalg.norm(np.asarray(current) - np.asarray(previous), axis=-1)))


@dataclass
class Schedule:
    """Decides the next measured epoch. ``decide`` returns (next epoch or None when done, decision)."""

    cfg: ScheduleConfig
    epochs: int
    skip: int = field(init=False)
    _log: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.skip = self.cfg.initial_skip
        if self.cfg.kind == "log":  # at most ``points`` epochs
            self._log = np.union1d(idnns_log_epochs(self.epochs, self.cfg.points), [self.epochs])

    @property
    def adaptive(self) -> bool:
        return self.cfg.kind in ADAPTIVE

    @property
    def keeps_skipped_weights(self) -> bool:
        return self.cfg.kind == "delta_exact"

    def first(self) -> int:
        return 0

    def next_static(self, epoch: int) -> int:
        """The static schedule's next measured epoch after ``epoch`` (< E)."""
        kind = self.cfg.kind
        if kind == "every":
            nxt = epoch + 1
        elif kind == "every_n":
            nxt = (epoch // self.cfg.every + 1) * self.cfg.every
        elif kind == "log":
            assert self._log is not None
            nxt = int(self._log[np.searchsorted(self._log, epoch, side="right")])
        elif kind in REPORT_STEPS:
            nxt = next_reported(REPORT_STEPS[kind], epoch)
        else:
            raise ValueError(f"not a static schedule: {kind}")
        return min(nxt, self.epochs)

    def resume_next(self, epoch: int) -> int | None:
        """The epoch measured after ``epoch`` when a run resumes there (``skip`` restored): the
        static schedule's next, or ``epoch + skip`` for the adaptive ones; None at the end."""
        if epoch >= self.epochs:
            return None
        return self.next_static(epoch) if not self.adaptive else min(epoch + self.skip, self.epochs)

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
        kind = self.cfg.kind
        if epoch >= self.epochs:
            return None, {"kind": kind, "decision": "end", "skip": 0, "distance": distance}
        if not self.adaptive:
            nxt = self.next_static(epoch)
            return nxt, {"kind": kind, "decision": "planned", "skip": nxt - epoch, "distance": distance}
        moved = distance is not None and distance > self.cfg.delta
        if distance is None:
            decision = "start"
        elif kind == "delta_exact" and last_gap is not None and last_gap < self.skip:
            self.skip, decision = max(1, last_gap), "shrink"
        elif moved and kind == "delta_approx":  # the study's rule: keep the skip
            decision = "keep"
        elif moved:
            self.skip, decision = max(1, self.skip // 2), "halve"
        else:
            self.skip, decision = min(self.cfg.max_skip, self.skip * 2), "double"
        nxt = min(epoch + self.skip, self.epochs)
        return nxt, {"kind": kind, "decision": decision, "skip": self.skip, "distance": distance}


def static_epochs(cfg: ScheduleConfig, epochs: int) -> Iterator[int]:
    """Every epoch a static schedule measures, in order (a generator: it never holds them all)."""
    sched = Schedule(cfg, epochs)
    epoch: int | None = sched.first()
    while epoch is not None:
        yield epoch
        epoch = sched.decide(epoch, None)[0]
