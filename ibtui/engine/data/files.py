"""A user's files: ``mat:PATH`` (MATLAB, keys F and y) and ``npz:PATH`` (keys X and y)."""

from __future__ import annotations

import numpy as np

from ibtui.engine.data.dataset import Dataset, _check_file, _finish, _one_line, _user_path
from ibtui.errors import UserError

def _load_mat(raw: str, spec: str) -> Dataset:
    path = _user_path(raw, spec)
    _check_file(path, spec)
    where = f"{path}"
    try:
        import scipy.io

        content = scipy.io.loadmat(str(path))
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
        raise UserError(f"{where}: unsupported MATLAB file version (save it with -v7 or older): {e}") from None
    except Exception as e:  # scipy raises many types on corrupt files
        raise UserError(f"{where}: cannot read as a MATLAB .mat file: {_one_line(e)}") from None
    for key in ("F", "y"):
        if key not in content:
            found = ", ".join(k for k in content if not k.startswith("__")) or "none"
            raise UserError(f"{where}: missing variable {key!r} (found: {found}); expected F (N x D) and y (1 x N)")
    F = np.asarray(content["F"])
    y = np.asarray(content["y"])
    if F.ndim != 2:
        raise UserError(f"{where}: F must be a 2-D matrix (N x D), got shape {F.shape}")
    if y.ndim > 2 or (y.ndim == 2 and min(y.shape) != 1 and y.size > 0):
        raise UserError(f"{where}: y must be a vector (1 x N or N x 1), got shape {y.shape}")
    return _finish(f"mat:{raw.strip()}", where, F, y.reshape(-1), "F", "y")


def _load_npz(raw: str, spec: str) -> Dataset:
    path = _user_path(raw, spec)
    _check_file(path, spec)
    where = f"{path}"
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UserError(f"{where}: cannot read: {_one_line(e)}") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise UserError(f"{where}: not an .npz archive (expected a zip of arrays X and y, as written by numpy.savez)")
    try:
        with np.load(str(path), allow_pickle=False) as archive:
            for key in ("X", "y"):
                if key not in archive.files:
                    found = ", ".join(archive.files) or "none"
                    raise UserError(f"{where}: missing array {key!r} (found: {found}); expected X (N, ...) and y (N,)")
            X = archive["X"]
            y = archive["y"]
    except UserError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError, EOFError, zlib.error...
        raise UserError(f"{where}: cannot read as a numpy .npz archive: {_one_line(e)}") from None
    if y.ndim != 1:
        raise UserError(f"{where}: y must have shape (N,), got {y.shape}")
    return _finish(f"npz:{raw.strip()}", where, X, y, "X", "y")
