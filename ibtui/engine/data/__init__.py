"""Datasets: the generated 12-bit task, a user's ``.mat``/``.npz``, MNIST, Fashion-MNIST, any
directory of MNIST-format IDX files and CIFAR-10.

``load_dataset(spec, data_dir)`` returns a :class:`Dataset` (float32 inputs of shape (N, D),
int64 labels 0..C-1, and for images their shape (C, H, W) in ``Dataset.shape``). Every problem with the user's input raises :class:`ibtui.errors.UserError`
with one line naming the spec or file and what is wrong; no raw exception escapes.

Spec forms
----------
``12bit``           the 12-bit task, generated here (no file; see below)
``mat:PATH``        a MATLAB file holding ``F`` (N x D inputs) and ``y`` (1 x N or N x 1 labels),
                    e.g. Tishby's ``var_u.mat``
``npz:PATH``        a numpy ``.npz`` holding ``X`` (N, ...) (flattened to (N, D)) and ``y`` (N,)
``mnist``           MNIST, the four official IDX files
``fashion-mnist``   Fashion-MNIST, same format
``idx:DIR``         any directory of the four MNIST-format IDX files (see below)
``cifar10``         CIFAR-10, the binary archive (see ``ibtui.engine.data.cifar``)
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

Any IDX dataset (``idx:DIR``)
-----------------------------
DIR holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each ``.gz`` or plain (the ``.gz`` is read when both are there):
unsigned-byte images N×rows×cols and labels N, read as MNIST (pixels / 255, train then test).
Nothing is downloaded or checksummed; a missing file, a malformed header, images of no pixels or
an empty split is a one-line error. This covers notMNIST (the letters A-J in 28×28 glyphs, the
second dataset the seed study planned; MNIST-format files are published by
davidflanagan/notMNIST-to-MNIST), Kuzushiji-MNIST and EMNIST (rename or link its
``emnist-<split>-*`` files to the four names; EMNIST's images are stored transposed, which a
network does not mind).

CIFAR-10 (``cifar10``)
----------------------
``cifar-10-binary.tar.gz`` (170,052,171 bytes, SHA-256 c4a38c50...1bca1dd) is read from
``data_dir`` or the cache ``$IBTUI_CACHE/cifar10`` (``~/.cache/ibtui/cifar10``), downloaded there
once from https://www.cs.toronto.edu/~kriz/ (or ``$IBTUI_CIFAR10_MIRROR``) into a temporary file
whose size and SHA-256 are checked before it is renamed into place; the cached archive's size and
SHA-256 are checked at every load. Its batch files are read by exact name from the tar (nothing is
extracted to disk): 50,000 train then 10,000 test images, 3×32×32 flattened in C, H, W order,
pixels / 255. The Python (pickled) version of the archive is never used.
"""

from __future__ import annotations

from pathlib import Path

from ibtui.engine.data.dataset import MAX_CLASSES, Dataset
from ibtui.engine.data.files import _load_mat, _load_npz
from ibtui.engine.data.cifar import CIFAR10, load_cifar10
from ibtui.engine.data.idx import SOURCES, _load_idx_dataset, load_idx_directory
from ibtui.engine.data.twelve_bit import TWELVE_BIT_VERTICES, make_twelve_bit, twelve_bit_patterns, twelve_bit_score
from ibtui.errors import UserError

__all__ = [
    "Dataset",
    "load_dataset",
    "check_dataset_spec",
    "make_twelve_bit",
    "twelve_bit_patterns",
    "twelve_bit_score",
    "TWELVE_BIT_VERTICES",
    "SOURCES",
    "CIFAR10",
    "VALID_SPECS",
    "MAX_CLASSES",
]

VALID_SPECS = "12bit, mnist, fashion-mnist, cifar10, idx:DIR, mat:PATH, npz:PATH"


def check_dataset_spec(spec: str) -> None:
    """Reject a spec of none of the forms in ``VALID_SPECS`` (no file is read: a run's machine may differ)."""
    key = spec.strip().lower() if isinstance(spec, str) else ""
    if not (key in ("12bit", "cifar10") or key in SOURCES or key.startswith(("mat:", "npz:", "idx:"))):
        raise _unknown_spec(spec)


def _unknown_spec(spec: object) -> UserError:
    return UserError(f"unknown dataset spec {spec!r}: valid forms are {VALID_SPECS}")


def load_dataset(spec: str, data_dir: str | Path | None = None, fetch_into_data_dir: bool = True) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring for the forms).
    ``fetch_into_data_dir`` False (a ``data_dir`` read from a run directory, which may come from
    someone else): ``data_dir`` is only read; missing files are fetched into the cache instead."""
    if not isinstance(spec, str):
        raise UserError(f"dataset spec must be a string, got {type(spec).__name__}; valid forms: {VALID_SPECS}")
    text = spec.strip()
    key = text.lower()
    if key == "12bit":
        return make_twelve_bit()
    if key in SOURCES:
        return _load_idx_dataset(key, data_dir, fetch_into_data_dir)
    if key == "cifar10":
        return load_cifar10(data_dir, fetch_into_data_dir)
    if key.startswith("idx:"):
        return load_idx_directory(text[4:], text)
    if key.startswith("mat:"):
        return _load_mat(text[4:], text)
    if key.startswith("npz:"):
        return _load_npz(text[4:], text)
    raise _unknown_spec(spec)
