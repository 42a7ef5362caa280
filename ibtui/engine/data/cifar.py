"""CIFAR-10 from its binary archive, downloaded once into the cache and checked (size and SHA-256)
each time it is loaded. The Python version of the archive holds pickles and is never used.

The archive (``cifar-10-batches-bin/``) holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` (train)
and ``test_batch.bin`` (test), each a sequence of 3073-byte records: one label byte (0-9), then
1024 red, 1024 green and 1024 blue pixel bytes of a 32×32 image in row-major order. Members are
read from the tar by exact name into memory; nothing is extracted to disk.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ibtui.engine.data.dataset import Dataset, _one_line
from ibtui.engine.data.idx import _cache_dir, _download, _mirror_env, _sha256
from ibtui.errors import UserError

CIFAR10 = {
    "base_url": "https://www.cs.toronto.edu/~kriz/",
    "file": "cifar-10-binary.tar.gz",
    "size": 170_052_171,
    "sha256": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
}
"""The official binary archive: its name, size in bytes and SHA-256."""

FOLDER = "cifar-10-batches-bin"
TRAIN_MEMBERS = tuple(f"{FOLDER}/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = f"{FOLDER}/test_batch.bin"
IMAGE_SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32
MAX_MEMBER_BYTES = 64 << 20
"""Largest batch file read (the real ones are 30,730,000 bytes)."""


def _archive(data_dir: str | Path | None, fetch_into_data_dir: bool) -> Path:
    """The verified archive in ``data_dir`` or the cache, downloaded there when absent."""
    name, size, sha = CIFAR10["file"], int(CIFAR10["size"]), str(CIFAR10["sha256"])
    directory = _cache_dir("cifar10", data_dir)
    if not fetch_into_data_dir and not (directory / name).is_file():
        directory = _cache_dir("cifar10", None)
    path = directory / name
    if not path.is_file():
        base_url = os.environ.get(_mirror_env("cifar10"), "").strip() or str(CIFAR10["base_url"])
        _download(base_url.rstrip("/") + "/" + name, path, sha, "cifar10", size)
        return path
    try:
        got_size = path.stat().st_size
        got = _sha256(path) if got_size == size else None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {_one_line(e)}") from None
    if got_size != size:
        raise UserError(f"{path}: {got_size} bytes, expected {size} (truncated?); delete the file to download it again")
    if got != sha:
        raise UserError(f"{path}: checksum mismatch (SHA-256 {got}, expected {sha}); delete the file to download it again")
    return path


def _records(tar: tarfile.TarFile, member: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,) uint8, images (n, 3072) uint8) of one batch file of the archive."""
    try:
        info = tar.getmember(member)
    except KeyError:
        raise UserError(f"{path}: no {member} in the archive (not the CIFAR-10 binary version?)") from None
    if not info.isfile() or not 0 < info.size <= MAX_MEMBER_BYTES or info.size % RECORD:
        raise UserError(f"{path}: {member} is not a file of whole {RECORD}-byte records ({info.size} bytes)")
    handle = tar.extractfile(info)
    data = handle.read() if handle is not None else b""
    if len(data) != info.size:
        raise UserError(f"{path}: {member} is truncated ({len(data)} of {info.size} bytes)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    if labels.max() > 9:
        raise UserError(f"{path}: {member} holds label {int(labels.max())}; CIFAR-10 labels are 0-9")
    return labels, records[:, 1:]


def load_cifar10(data_dir: str | Path | None = None, fetch_into_data_dir: bool = True) -> Dataset:
    """CIFAR-10: 50,000 train then 10,000 test images (``is_test``), 3×32×32 flattened in C, H, W
    order, pixels scaled to [0, 1]. Raises UserError (one line) for any problem."""
    path = _archive(data_dir, fetch_into_data_dir)
    try:
        with tarfile.open(path, "r:gz") as tar:
            parts = [_records(tar, member, path) for member in (*TRAIN_MEMBERS, TEST_MEMBER)]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read the archive: {_one_line(e)}") from None
    n_test = len(parts[-1][0])
    y = np.concatenate([labels for labels, _ in parts]).astype(np.int64)
    x = np.concatenate([images for _, images in parts]).astype(np.float32)
    x /= np.float32(255.0)
    is_test = np.zeros(len(y), dtype=bool)
    is_test[len(y) - n_test:] = True
    n_train = len(y) - n_test
    return Dataset(name="cifar10", x=x, y=y, n_classes=10, is_test=is_test, shape=IMAGE_SHAPE,
                   description=f"CIFAR-10: {len(y)} images 3x32x32 ({n_train} train + {n_test} test), "
                               "10 classes, pixels scaled to [0, 1]")
