"""Typed records of a run and their JSON codec (no torch: readers stay light).

A measured epoch is one :class:`MeasureRecord`: the epoch (after that many epochs of training),
per plane a :class:`PlaneValues` (I(X;T) and I(T;Y) in bits, members × layers), the losses and
accuracies, the schedule's decision. The engine writes ``record.to_json()`` as one line of
``events.jsonl`` (and sends the same dict to the app); every reader turns a line back into a
record with :meth:`MeasureRecord.from_json`, which validates it (``ValueError`` for anything
malformed): the one place where an event is parsed.

JSON form of a plane (unchanged since the first versions, so old runs read back):
``{"ixt": [L], "ity": [L]}`` means over members; ``"ixt_seeds"``/``"ity_seeds"`` (S × L) every
member's values when S > 1; pooled plug-in planes add ``"h_t_x"`` (L, mean over members),
``"h_t_x_seeds"`` (S × L), ``"h_t_x_cap"`` (bits) and ``"saturated"`` (L bools).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_LAYERS = 4096
MAX_MEMBERS = 1000
MAX_BITS = 1e6
"""No information value in a run exceeds this many bits (a sanity bound for hostile files)."""


def _number(value: Any, where: str, allow_none: bool = True) -> float:
    """A finite JSON number as float; None (or NaN/inf from an old writer) as NaN when allowed."""
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} is not a number: {value!r}"[:200])
    value = float(value)
    if not math.isfinite(value) and not allow_none:
        raise ValueError(f"{where} is not finite")
    return value


def _matrix(value: Any, rows: int | None, cols: int, where: str) -> np.ndarray:
    """A rows × cols list of lists of numbers (rows None: any number ≥ 1) as float64."""
    if not isinstance(value, list) or not value or len(value) > MAX_MEMBERS or (rows is not None and len(value) != rows):
        raise ValueError(f"{where} should be {rows or 'S'} rows of {cols} numbers")
    return np.stack([_vector(row, cols, where) for row in value])


def _vector(value: Any, length: int, where: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{where} should be a list of {length} numbers")
    out = np.asarray([_number(v, where) for v in value], dtype=np.float64)
    if np.any(np.abs(out[np.isfinite(out)]) > MAX_BITS):
        raise ValueError(f"{where} holds values beyond {MAX_BITS:g} bits")
    return out


@dataclass
class PlaneValues:
    """One plane at one epoch for every member: I(X;T) and I(T;Y), (S, L) in bits; for pooled
    plug-in estimates also H(T|X) (S, L) and its cap (bits)."""

    ixt: np.ndarray
    ity: np.ndarray
    h_t_x: np.ndarray | None = None
    cap: float | None = None

    @property
    def members(self) -> int:
        return int(self.ixt.shape[0])

    @property
    def saturated(self) -> np.ndarray | None:
        """(S, L) bool: H(T|X) at its cap (the pooled estimate is not resolved there), or None."""
        if self.h_t_x is None or self.cap is None:
            return None
        return self.h_t_x >= self.cap - 1e-9 * max(1.0, self.cap)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ixt": [float(v) for v in self.ixt.mean(0)], "ity": [float(v) for v in self.ity.mean(0)]}
        if self.members > 1:
            out["ixt_seeds"], out["ity_seeds"] = self.ixt.tolist(), self.ity.tolist()
        if self.h_t_x is not None:
            out["h_t_x"] = [float(v) for v in self.h_t_x.mean(0)]
            out["h_t_x_cap"] = float(self.cap)
            out["saturated"] = [bool(v) for v in self.saturated.any(0)]
            if self.members > 1:
                out["h_t_x_seeds"] = self.h_t_x.tolist()
        return out

    @classmethod
    def from_json(cls, value: Any, layers: int, where: str) -> "PlaneValues":
        """Parse and validate (ValueError). ``layers``: the run's layer count."""
        if not isinstance(value, dict):
            raise ValueError(f"{where} is not an object")
        mean_ixt = _vector(value.get("ixt"), layers, f"{where}.ixt")
        mean_ity = _vector(value.get("ity"), layers, f"{where}.ity")
        if "ixt_seeds" in value or "ity_seeds" in value:
            ixt = _matrix(value.get("ixt_seeds"), None, layers, f"{where}.ixt_seeds")
            ity = _matrix(value.get("ity_seeds"), ixt.shape[0], layers, f"{where}.ity_seeds")
        else:
            ixt, ity = mean_ixt[None], mean_ity[None]
        h_t_x, cap = None, None
        if "h_t_x" in value:
            cap = _number(value.get("h_t_x_cap"), f"{where}.h_t_x_cap", allow_none=False)
            if "h_t_x_seeds" in value:
                h_t_x = _matrix(value["h_t_x_seeds"], ixt.shape[0], layers, f"{where}.h_t_x_seeds")
            else:
                h_t_x = np.repeat(_vector(value["h_t_x"], layers, f"{where}.h_t_x")[None], ixt.shape[0], axis=0)
        return cls(ixt, ity, h_t_x, cap)


@dataclass
class MeasureRecord:
    """One measured epoch (see the module docstring). Losses in nats, accuracies in [0, 1];
    ``None`` where a value does not exist (an empty test set)."""

    epoch: int
    planes: dict[str, PlaneValues]
    train_loss: float | None = None
    train_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    float_test_acc: float | None = None
    members: dict[str, list[Any]] | None = None  # per member: seed, losses, accuracies
    schedule: dict[str, Any] = field(default_factory=dict)
    mi_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "measure", "epoch": self.epoch,
            "train_loss": self.train_loss, "train_acc": self.train_acc,
            "test_loss": self.test_loss, "test_acc": self.test_acc,
            "planes": {name: plane.to_json() for name, plane in self.planes.items()},
            "mi_seconds": self.mi_seconds,
        }
        if self.float_test_acc is not None:
            out["float_test_acc"] = self.float_test_acc
        if self.members is not None:
            out["seeds"] = self.members
        if self.schedule:
            out["schedule"] = self.schedule
        return out

    @classmethod
    def from_json(cls, value: Any, layers: int, planes: list[str] | None = None,
                  max_epoch: int | None = None) -> "MeasureRecord":
        """Parse and validate one events.jsonl object (ValueError with a short reason). ``planes``:
        the planes it must hold (others are kept too); ``max_epoch``: the run's last epoch."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        epoch = value.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0 or epoch > (max_epoch or 2**53):
            raise ValueError(f"bad epoch {epoch!r}"[:80])
        raw = value.get("planes")
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"epoch {epoch}: no planes")
        parsed = {str(name): PlaneValues.from_json(plane, layers, f"epoch {epoch} plane {str(name)[:60]}")
                  for name, plane in raw.items()}
        missing = [name for name in planes or [] if name not in parsed]
        if missing:
            raise ValueError(f"epoch {epoch}: plane {missing[0][:60]} missing")
        numbers = {}
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "float_test_acc", "mi_seconds"):
            number = _number(value.get(key), f"epoch {epoch} {key}")
            numbers[key] = None if math.isnan(number) else number
        schedule = value.get("schedule") if isinstance(value.get("schedule"), dict) else {}
        members = value.get("seeds") if isinstance(value.get("seeds"), dict) else None
        return cls(epoch, parsed, members=members, schedule=schedule, **numbers)
