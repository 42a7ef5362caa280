"""Datasets: the generated 12-bit task, a user's ``.mat``/``.npz``, MNIST and Fashion-MNIST.

``load_dataset(spec, data_dir)`` returns a :class:`Dataset` (float32 inputs of shape (N, D),
int64 labels 0..C-1). Every problem with the user's input raises :class:`ibtui.errors.UserError`
with one line naming the spec or file and what is wrong; no raw exception escapes.

Spec forms
----------
``12bit``           the 12-bit task, generated here (no file; see below)
``mat:PATH``        a MATLAB file holding ``F`` (N x D inputs) and ``y`` (1 x N or N x 1 labels),
                    e.g. Tishby's ``var_u.mat``
``npz:PATH``        a numpy ``.npz`` holding ``X`` (N, ...) (flattened to (N, D)) and ``y`` (N,)
``mnist``           MNIST, the four official IDX files
``fashion-mnist``   Fashion-MNIST, same format
Paths are used as given (``~`` expanded, relative to the current directory).

The 12-bit task
---------------
Inputs: all 4096 patterns of 12 bits in counting order, as 0/1 float32: row ``i`` is the
binary representation of ``i`` with the most significant bit first (column 0 is bit 11 of
``i``), exactly the row order of ``F`` in ``var_u.mat``.

Labels (after Shwartz-Ziv & Tishby 2017, whose generator was never published): column ``j``
sits on vertex ``v_j`` of a regular icosahedron centred at the origin, with unit vectors
``v_j = u_j / |u_j|``, φ = (1 + √5)/2 and

    j :  0        1        2        3        4        5
    u_j: (0,-1,-φ) (-1,-φ,0) (0,-1,φ)  (1,-φ,0)  (-φ,0,1)  (0,1,-φ)
    j :  6        7        8        9        10       11
    u_j: (-1,φ,0)  (1,φ,0)   (φ,0,1)   (0,1,φ)   (φ,0,-1)  (-φ,0,-1)

For a pattern x let n(x) = Σ_j x_j (number of ones) and S(x) = Σ_j x_j v_j. Then

    f(x) = n(x) + ‖S(x)‖                      (Euclidean norm)
    y(x) = 1 if f(x) > θ else 0

f is invariant under every orthogonal map of space that maps the vertex set onto itself
(the 120 symmetries of the icosahedron, rotations and reflections): such a map permutes the
bits, keeps n, and maps S to an orthogonal image of the same norm. θ is chosen without any
randomness: round f to 9 decimals, take its sorted distinct values t_1 < t_2 < ..., and let θ
be the t_k whose p_k = mean(f > t_k) is closest to 0.5 (ties: the smaller t_k). This gives
θ = 7 + 0.562777... ≈ 7.5628 (the f of the 7-bit patterns of smallest ‖S‖), 2118 of 4096
labels equal to 1, p(y=1) = 0.5171.

Where this comes from: in var_u the positive patterns with five ones co-occur pairwise in
exactly three different counts, which are the icosahedron's three vertex distances; this
gives the adjacency of the columns, and the table above is an embedding with that
adjacency. With it, var_u's labels are a function of (n, ‖S‖) only, and the rule above
reproduces all 4096 labels of var_u exactly (a test checks this): every pattern with at most
four ones is 0 (n + ‖S‖ ≤ 4 + 2.753 < θ), every pattern with at least eight ones is 1
(f ≥ 8 > θ), and five, six and seven ones are mixed (7.6 %, 57.6 %, 92.4 % ones).

MNIST and Fashion-MNIST
-----------------------
The four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (``.gz`` or already uncompressed)
are read from ``data_dir`` if given, else from the cache ``$IBTUI_CACHE/<dataset>`` or
``~/.cache/ibtui/<dataset>``. Missing files are downloaded once into that directory from
``SOURCES[<dataset>]["base_url"]`` (overridden by ``$IBTUI_MNIST_MIRROR`` or
``$IBTUI_FASHION_MNIST_MIRROR``): into a temporary file in the same directory, whose
SHA-256 is checked before it is renamed into place (a mismatch deletes it). Every ``.gz``
file is checked against its SHA-256 each time it is loaded; uncompressed files cannot be
(the checksums are of the ``.gz`` files) and are only checked for a valid IDX layout.
Images are flattened to 784 floats in [0, 1]; the train samples come first, then the 10k test
samples, marked by ``Dataset.is_test``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibtui.errors import UserError

__all__ = [
    "Dataset",
    "load_dataset",
    "make_twelve_bit",
    "twelve_bit_score",
    "TWELVE_BIT_VERTICES",
    "SOURCES",
    "VALID_SPECS",
]

MAX_CLASSES = 10_000
VALID_SPECS = "12bit, mnist, fashion-mnist, mat:PATH, npz:PATH"


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

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Dataset {self.name!r}: x must be (N, D) and y (N,), got {self.x.shape} and {self.y.shape}")
        if self.is_test is not None and self.is_test.shape != self.y.shape:
            raise ValueError(f"Dataset {self.name!r}: is_test must have shape {self.y.shape}, got {self.is_test.shape}")

    def __len__(self) -> int:
        return int(self.y.shape[0])


# --------------------------------------------------------------------------------------------
# The 12-bit task
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Validation shared by the file loaders
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# mat:PATH and npz:PATH
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------------

# SHA-256 of the official .gz files, as pinned by tensorflow/datasets
# (tensorflow_datasets/url_checksums/mnist.txt and fashion_mnist.txt).
SOURCES: dict[str, dict] = {
    "mnist": {
        "base_url": "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "files": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion-mnist": {
        "base_url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "files": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
}

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _mirror_env(dataset: str) -> str:
    return "IBTUI_" + dataset.upper().replace("-", "_") + "_MIRROR"


def _cache_dir(dataset: str, data_dir: str | Path | None) -> Path:
    if data_dir is not None and str(data_dir).strip():
        return Path(data_dir).expanduser()
    root = os.environ.get("IBTUI_CACHE", "").strip()
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ibtui"
    return base / dataset


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, sha256: str, dataset: str) -> None:
    """Fetch url into a temp file next to dest, check its SHA-256, then rename it to dest."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise UserError(f"{dataset}: cannot write to the cache directory {dest.parent}: {_one_line(e)}") from None
    tmp = Path(tmp_name)
    hint = f"(set {_mirror_env(dataset)} to another mirror, or put the files in {dest.parent})"
    try:
        h = hashlib.sha256()
        try:  # a fresh opener reads the proxy settings of the environment at each call
            with os.fdopen(fd, "wb") as out, urllib.request.build_opener().open(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    h.update(block)
                    out.write(block)
        except urllib.error.HTTPError as e:
            raise UserError(f"{dataset}: download failed: {url}: HTTP {e.code} {e.reason} {hint}") from None
        except urllib.error.URLError as e:
            reason = _one_line(e.reason) if isinstance(e.reason, BaseException) else str(e.reason)
            raise UserError(f"{dataset}: download failed: {url}: {reason} {hint}") from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # timeouts, resets, truncation, disk full, bad URL
            raise UserError(f"{dataset}: download failed: {url}: {_one_line(e)} {hint}") from None
        got = h.hexdigest()
        if got != sha256:
            raise UserError(
                f"{dataset}: checksum mismatch for {url}: SHA-256 {got}, expected {sha256}; the file was discarded {hint}"
            )
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise UserError(f"{dataset}: cannot store {dest}: {_one_line(e)}") from None
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass


def _parse_idx(data: bytes, where: str) -> np.ndarray:
    """Parse an IDX file (magic 0 0 type ndim, big-endian uint32 dims, then the data)."""
    if len(data) < 4:
        raise UserError(f"{where}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or not 1 <= data[3] <= 4:
        raise UserError(f"{where}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{where}: corrupt IDX file (truncated header)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(
            f"{where}: corrupt IDX file: header says {'x'.join(map(str, dims))} items "
            f"({expected} bytes) but {len(data) - header} bytes follow"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _read_idx_file(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot read{' gzip' if path.suffix == '.gz' else ''} file: {_one_line(e)}") from None
    return _parse_idx(data, str(path))


def _locate_idx_files(dataset: str, data_dir: str | Path | None) -> dict[str, Path]:
    """Find (or download and verify) the four IDX files; returns stem -> path."""
    source = SOURCES[dataset]
    files: dict[str, str] = source["files"]
    base_url = os.environ.get(_mirror_env(dataset), "").strip() or source["base_url"]
    if not base_url.endswith("/"):
        base_url += "/"
    directory = _cache_dir(dataset, data_dir)
    found: dict[str, Path] = {}
    for stem in _IDX_FILES:
        gz_name = stem + ".gz"
        expected = files[gz_name]
        gz_path = directory / gz_name
        raw_path = directory / stem
        if gz_path.is_file():
            try:
                got = _sha256(gz_path)
            except OSError as e:
                raise UserError(f"{gz_path}: cannot read: {_one_line(e)}") from None
            if got != expected:
                raise UserError(
                    f"{gz_path}: checksum mismatch (SHA-256 {got}, expected {expected}); delete the file to download it again"
                )
            found[stem] = gz_path
        elif raw_path.is_file():
            found[stem] = raw_path  # user-provided uncompressed file: IDX layout checked when parsed
        else:
            _download(base_url + gz_name, gz_path, expected, dataset)
            found[stem] = gz_path
    return found


def _load_idx_dataset(dataset: str, data_dir: str | Path | None) -> Dataset:
    paths = _locate_idx_files(dataset, data_dir)
    arrays = {stem: _read_idx_file(path) for stem, path in paths.items()}
    parts_x, parts_y = [], []
    shape = None
    for split in ("train", "t10k"):
        img_path, lab_path = paths[f"{split}-images-idx3-ubyte"], paths[f"{split}-labels-idx1-ubyte"]
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise UserError(f"{img_path}: expected unsigned-byte images (N x rows x cols), got {images.dtype} with shape {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise UserError(f"{lab_path}: expected unsigned-byte labels (N), got {labels.dtype} with shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise UserError(f"{img_path}: {images.shape[0]} images but {lab_path.name} has {labels.shape[0]} labels")
        if shape is not None and images.shape[1:] != shape:
            raise UserError(f"{img_path}: images are {images.shape[1:]}, train images are {shape}")
        shape = images.shape[1:]
        parts_x.append(images.reshape(images.shape[0], -1))
        parts_y.append(labels)
    n_train, n_test = parts_y[0].shape[0], parts_y[1].shape[0]
    x = np.concatenate(parts_x).astype(np.float32)
    x /= np.float32(255.0)
    y, n_classes = _labels(np.concatenate(parts_y), str(paths["train-labels-idx1-ubyte"].parent), "in the label files")
    is_test = np.zeros(n_train + n_test, dtype=bool)
    is_test[n_train:] = True
    title = _TITLES[dataset]
    return Dataset(
        name=dataset,
        x=x,
        y=y,
        n_classes=n_classes,
        is_test=is_test,
        description=(
            f"{title}: {n_train + n_test} images {shape[0]}x{shape[1]} ({n_train} train + {n_test} test), "
            f"{n_classes} classes, pixels scaled to [0, 1]"
        ),
    )


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def check_dataset_spec(spec: str) -> None:
    """Reject a spec of none of the forms in ``VALID_SPECS`` (no file is read: a run's machine may differ)."""
    key = spec.strip().lower() if isinstance(spec, str) else ""
    if not (key == "12bit" or key in SOURCES or key.startswith(("mat:", "npz:"))):
        raise _unknown_spec(spec)


def _unknown_spec(spec: object) -> UserError:
    return UserError(f"unknown dataset spec {spec!r}: valid forms are {VALID_SPECS}")


def load_dataset(spec: str, data_dir: str | Path | None = None) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring for the forms)."""
    if not isinstance(spec, str):
        raise UserError(f"dataset spec must be a string, got {type(spec).__name__}; valid forms: {VALID_SPECS}")
    text = spec.strip()
    key = text.lower()
    if key == "12bit":
        return make_twelve_bit()
    if key in SOURCES:
        return _load_idx_dataset(key, data_dir)
    if key.startswith("mat:"):
        return _load_mat(text[4:], text)
    if key.startswith("npz:"):
        return _load_npz(text[4:], text)
    raise _unknown_spec(spec)
