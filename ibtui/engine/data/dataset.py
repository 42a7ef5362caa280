"""The in-memory dataset and the checks every file loader shares (one-line UserErrors)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibtui.errors import UserError

MAX_CLASSES = 10_000


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset held in memory.

    ``eq=False``: datasets compare by identity (arrays have no single truth value).
    """

    name: str
    x: np.ndarray  # float32, (N, D) flattened inputs
    y: np.ndarray  # int64, (N,), labels 0..C-1
    n_classes: int
    is_test: np.ndarray | None = None  # bool (N,): a predefined test split, else None
    description: str = ""
    shape: tuple[int, int, int] | None = None  # (C, H, W) of image inputs (x's rows in that order), else None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Dataset {self.name!r}: x must be (N, D) and y (N,), got {self.x.shape} and {self.y.shape}")
        if self.is_test is not None and self.is_test.shape != self.y.shape:
            raise ValueError(f"Dataset {self.name!r}: is_test must have shape {self.y.shape}, got {self.is_test.shape}")
        if self.shape is not None and int(np.prod(self.shape)) != self.x.shape[1]:
            raise ValueError(f"Dataset {self.name!r}: image shape {self.shape} does not hold {self.x.shape[1]} features")

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _inputs(x: np.ndarray, where: str, key: str) -> np.ndarray:
    """Numeric array (N, ...) -> float32 (N, D), finite."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise UserError(f"{where}: {key} must be numeric, got dtype {x.dtype}")
    if x.ndim == 0:
        raise UserError(f"{where}: {key} must be an array of shape (N, ...), got a scalar")
    if x.shape[0] == 0:
        raise UserError(f"{where}: {key} is empty (0 samples)")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] == 0:
        raise UserError(f"{where}: {key} has 0 features per sample (shape {x.shape})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise UserError(f"{where}: {key} contains NaN or infinite values")
    out = x.astype(np.float32)
    if not np.isfinite(out).all():
        raise UserError(f"{where}: {key} has values too large for float32")
    return np.ascontiguousarray(out)


def _labels(y: np.ndarray, where: str, key: str) -> tuple[np.ndarray, int]:
    """Integer-valued labels >= 0 -> (int64 (N,), n_classes = max + 1 >= 2)."""
    y = np.asarray(y)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise UserError(f"{where}: labels {key} must be integers, got dtype {y.dtype}")
    if y.size == 0:
        raise UserError(f"{where}: labels {key} are empty")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise UserError(f"{where}: labels {key} contain NaN or infinite values")
        if not np.all(y == np.round(y)):
            raise UserError(f"{where}: labels {key} must be integers, found non-integer values")
        if np.abs(y).max() > 2**53:
            raise UserError(f"{where}: labels {key} are too large")
    if y.min() < 0:
        raise UserError(f"{where}: labels {key} must be >= 0, found {y.min()}")
    if y.dtype.kind == "u" and y.max() > np.iinfo(np.int64).max:
        raise UserError(f"{where}: labels {key} are too large")
    y = y.astype(np.int64)
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise UserError(f"{where}: labels {key} hold a single class (0); need at least 2 classes")
    if n_classes > MAX_CLASSES:
        raise UserError(f"{where}: labels {key} go up to {n_classes - 1}; at most {MAX_CLASSES} classes "
                        "(labels are class indices 0..C-1)")
    return y, n_classes


def _finish(name: str, where: str, x: np.ndarray, y: np.ndarray, xkey: str, ykey: str) -> Dataset:
    xs = _inputs(x, where, xkey)
    ys, n_classes = _labels(y, where, ykey)
    if xs.shape[0] != ys.shape[0]:
        raise UserError(f"{where}: {xkey} has {xs.shape[0]} samples but {ykey} has {ys.shape[0]} labels")
    counts = np.bincount(ys, minlength=n_classes)
    if n_classes == 2:
        balance = f"p(y=1)={counts[1] / len(ys):.4f}"
    else:
        balance = f"{int((counts > 0).sum())} of {n_classes} classes present"
    desc = f"{name}: {xs.shape[0]} samples x {xs.shape[1]} features, {n_classes} classes, {balance}"
    return Dataset(name=name, x=xs, y=ys, n_classes=n_classes, is_test=None, description=desc)


def _user_path(raw: str, spec: str) -> Path:
    raw = raw.strip()
    if not raw:
        raise UserError(f"dataset spec {spec!r}: missing file path after the colon")
    return Path(raw).expanduser()


def _check_file(path: Path, spec: str) -> None:
    if not path.exists():
        raise UserError(f"dataset {spec!r}: file not found: {path}")
    if not path.is_file():
        raise UserError(f"dataset {spec!r}: not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise UserError(f"dataset {spec!r}: file is not readable: {path}")


def _one_line(e: BaseException) -> str:
    """An exception's message on one line, at most 300 characters (errors that quote a library's reason)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
