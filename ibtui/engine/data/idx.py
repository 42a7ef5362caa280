"""MNIST and Fashion-MNIST: IDX files, found in a directory or the cache, downloaded once and
checked against their SHA-256 (see ``ibtui.engine.data``)."""

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
from pathlib import Path

import numpy as np

from ibtui.engine.data.dataset import Dataset, _labels, _one_line, _user_path
from ibtui.errors import UserError

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


def _download(url: str, dest: Path, sha256: str, dataset: str, size: int | None = None) -> None:
    """Fetch url into a temp file next to dest, check its size (when given, in bytes) and SHA-256,
    then rename it to dest."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise UserError(f"{dataset}: cannot write to the cache directory {dest.parent}: {_one_line(e)}") from None
    tmp = Path(tmp_name)
    hint = f"(set {_mirror_env(dataset)} to another mirror, or put the files in {dest.parent})"
    try:
        h = hashlib.sha256()
        received = 0
        try:  # a fresh opener reads the proxy settings of the environment at each call
            with os.fdopen(fd, "wb") as out, urllib.request.build_opener().open(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                announced = response.headers.get("Content-Length", "")
                for block in iter(lambda: response.read(_CHUNK), b""):
                    h.update(block)
                    out.write(block)
                    received += len(block)
                    if size is not None and received > size:
                        raise UserError(f"{dataset}: download of {url} is larger than the expected {size} bytes; "
                                        f"the file was discarded {hint}")
        except urllib.error.HTTPError as e:
            raise UserError(f"{dataset}: download failed: {url}: HTTP {e.code} {e.reason} {hint}") from None
        except urllib.error.URLError as e:
            reason = _one_line(e.reason) if isinstance(e.reason, BaseException) else str(e.reason)
            raise UserError(f"{dataset}: download failed: {url}: {reason} {hint}") from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # timeouts, resets, truncation, disk full, bad URL
            raise UserError(f"{dataset}: download failed: {url}: {_one_line(e)} {hint}") from None
        if announced.isdigit() and received < int(announced):  # the server hung up early (read() does not raise)
            raise UserError(f"{dataset}: download of {url} was interrupted after {received} of {announced} bytes; "
                            f"the file was discarded {hint}")
        if size is not None and received != size:
            raise UserError(f"{dataset}: download of {url} is truncated: {received} bytes, expected {size}; "
                            f"the file was discarded {hint}")
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


def _locate_idx_files(dataset: str, data_dir: str | Path | None, fetch_into_data_dir: bool = True) -> dict[str, Path]:
    """Find (or download and verify) the four IDX files; returns stem -> path. Without
    ``fetch_into_data_dir`` nothing is created or written in ``data_dir``: unless every file is
    there, the cache directory is used (and downloaded into) instead."""
    source = SOURCES[dataset]
    files: dict[str, str] = source["files"]
    base_url = os.environ.get(_mirror_env(dataset), "").strip() or source["base_url"]
    if not base_url.endswith("/"):
        base_url += "/"
    directory = _cache_dir(dataset, data_dir)
    if not fetch_into_data_dir and not all((directory / (s + ".gz")).is_file() or (directory / s).is_file()
                                           for s in _IDX_FILES):
        directory = _cache_dir(dataset, None)
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


def _load_idx_dataset(dataset: str, data_dir: str | Path | None, fetch_into_data_dir: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST from ``data_dir`` or the cache (downloaded and checked there)."""
    return _idx_dataset(dataset, _TITLES[dataset], _locate_idx_files(dataset, data_dir, fetch_into_data_dir))


def load_idx_directory(raw: str, spec: str) -> Dataset:
    """``idx:DIR``: the four MNIST-format files in DIR, each ``.gz`` or plain (the ``.gz`` first when
    both are there); no checksum (any dataset in that format: notMNIST, Kuzushiji-MNIST, EMNIST...)."""
    directory = _user_path(raw, spec)
    if not directory.is_dir():
        raise UserError(f"dataset {spec!r}: not a directory: {directory}")
    paths: dict[str, Path] = {}
    for stem in _IDX_FILES:
        found = [p for p in (directory / (stem + ".gz"), directory / stem) if p.is_file()]
        if not found:
            raise UserError(f"dataset {spec!r}: missing {stem} (or {stem}.gz) in {directory}; an idx:DIR holds "
                            f"{', '.join(_IDX_FILES)}")
        paths[stem] = found[0]
    return _idx_dataset(f"idx:{raw.strip()}", f"IDX files in {directory}", paths)


def _idx_dataset(name: str, title: str, paths: dict[str, Path]) -> Dataset:
    """The dataset of the four IDX files ``paths`` (stem → file): train then test samples, pixels / 255."""
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
        if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
            raise UserError(f"{img_path}: no samples or no pixels (shape {images.shape}); each split needs images")
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
    return Dataset(
        name=name,
        x=x,
        y=y,
        n_classes=n_classes,
        is_test=is_test,
        description=(
            f"{title}: {n_train + n_test} images {shape[0]}x{shape[1]} ({n_train} train + {n_test} test), "
            f"{n_classes} classes, pixels scaled to [0, 1]"
        ),
        shape=(1, int(shape[0]), int(shape[1])),
    )
