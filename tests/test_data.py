"""Datasets: the generated 12-bit task, mat/npz loaders, MNIST-style IDX download and cache,
``idx:DIR`` directories and the CIFAR-10 binary archive.

No test touches the real network: MNIST and CIFAR-10 are exercised with tiny fixtures served from
a loopback HTTP server, with ``SOURCES`` / ``CIFAR10`` patched to point at them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import io
import os
import struct
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ibtui.engine import data
from ibtui.engine.data import (
    TWELVE_BIT_VERTICES,
    Dataset,
    load_dataset,
    make_twelve_bit,
    twelve_bit_score,
)
from ibtui.errors import UserError

VAR_U = Path(__file__).resolve().parents[2] / "shared" / "data" / "var_u.mat"
needs_var_u = pytest.mark.skipif(not VAR_U.is_file(), reason="var_u.mat (the original 12-bit data) is not available")

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def _offline_environment(monkeypatch, tmp_path):
    """Keep every test away from the user's cache, mirrors and proxies."""
    monkeypatch.setenv("IBTUI_CACHE", str(tmp_path / "default-cache"))
    for var in ("IBTUI_MNIST_MIRROR", "IBTUI_FASHION_MNIST_MIRROR", "IBTUI_CIFAR10_MIRROR", "http_proxy", "HTTP_PROXY",
                "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@functools.lru_cache(maxsize=1)
def twelve_bit() -> Dataset:
    return make_twelve_bit()


@functools.lru_cache(maxsize=1)
def var_u() -> tuple[np.ndarray, np.ndarray]:
    content = scipy.io.loadmat(str(VAR_U))
    return content["F"], content["y"].ravel().astype(np.int64)


def pattern_index(bits: np.ndarray) -> np.ndarray:
    """Row index of each 12-bit pattern (MSB first)."""
    return bits.astype(np.int64) @ (1 << np.arange(11, -1, -1))


# --------------------------------------------------------------------------------------------
# 12-bit task
# --------------------------------------------------------------------------------------------


def test_twelve_bit_has_all_4096_patterns_once():
    ds = twelve_bit()
    assert ds.x.shape == (4096, 12)
    assert len({tuple(row) for row in ds.x.astype(int)}) == 4096


def test_twelve_bit_rows_are_counting_order_most_significant_bit_first():
    ds = twelve_bit()
    assert np.array_equal(pattern_index(ds.x), np.arange(4096))
    assert ds.x[1, 11] == 1 and ds.x[2048, 0] == 1


def test_twelve_bit_inputs_are_float32_zeros_and_ones_and_labels_int64():
    ds = twelve_bit()
    assert ds.x.dtype == np.float32 and set(np.unique(ds.x)) == {0.0, 1.0}
    assert ds.y.dtype == np.int64 and ds.y.shape == (4096,)
    assert ds.n_classes == 2 and ds.is_test is None and ds.name == "12bit"
    assert "4096" in ds.description and "\n" not in ds.description


def test_twelve_bit_all_patterns_with_at_most_four_ones_are_class_0():
    ds = twelve_bit()
    assert np.all(ds.y[ds.x.sum(1) <= 4] == 0)


def test_twelve_bit_all_patterns_with_at_least_eight_ones_are_class_1():
    ds = twelve_bit()
    assert np.all(ds.y[ds.x.sum(1) >= 8] == 1)


def test_twelve_bit_patterns_with_five_to_seven_ones_are_mixed():
    ds = twelve_bit()
    for k in (5, 6, 7):
        labels = ds.y[ds.x.sum(1) == k]
        assert 0 < labels.mean() < 1, k


def test_twelve_bit_class_balance_is_2118_of_4096():
    assert int(twelve_bit().y.sum()) == 2118  # p(y=1) = 0.5171


def test_twelve_bit_threshold_is_the_distinct_score_giving_balance_closest_to_half():
    ds = twelve_bit()
    f = np.round(twelve_bit_score(ds.x), 9)
    gap = abs(ds.y.mean() - 0.5)
    assert np.array_equal(ds.y, (f > f[ds.y == 0].max()).astype(np.int64))
    for t in np.unique(f):
        assert abs((f > t).mean() - 0.5) >= gap


def test_twelve_bit_is_deterministic():
    a, b = make_twelve_bit(), make_twelve_bit()
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.description == b.description


def test_load_dataset_12bit_spec_returns_the_generated_task():
    ds = load_dataset(" 12bit ")
    assert np.array_equal(ds.x, twelve_bit().x) and np.array_equal(ds.y, twelve_bit().y)


def test_twelve_bit_vertices_form_a_regular_icosahedron():
    v = TWELVE_BIT_VERTICES
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    gram = v @ v.T
    for i in range(12):
        row = np.sort(np.round(np.delete(gram[i], i), 9))
        expected = np.sort([-1.0] + [-1 / np.sqrt(5)] * 5 + [1 / np.sqrt(5)] * 5)
        assert np.allclose(row, expected), i


def rotation(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def induced_permutation(matrix: np.ndarray) -> np.ndarray:
    """perm[i] = j such that matrix @ v_i = v_j (asserting the map is a symmetry)."""
    image = TWELVE_BIT_VERTICES @ matrix.T
    dist = np.linalg.norm(image[:, None, :] - TWELVE_BIT_VERTICES[None, :, :], axis=2)
    perm = dist.argmin(axis=1)
    assert np.allclose(dist[np.arange(12), perm], 0.0, atol=1e-9), "not a symmetry of the icosahedron"
    assert sorted(perm) == list(range(12))
    return perm


def labels_after_permutation(perm: np.ndarray) -> np.ndarray:
    """Labels of the permuted patterns x'[perm[i]] = x[i], listed in the original pattern order."""
    ds = twelve_bit()
    moved = np.zeros_like(ds.x)
    moved[:, perm] = ds.x
    return ds.y[pattern_index(moved)]


def icosahedral_symmetries() -> dict[str, np.ndarray]:
    v = TWELVE_BIT_VERTICES
    neighbours = [j for j in range(12) if np.isclose(v[0] @ v[j], 1 / np.sqrt(5))]
    a = neighbours[0]
    b = next(j for j in neighbours[1:] if np.isclose(v[a] @ v[j], 1 / np.sqrt(5)))  # (0, a, b) is a face
    return {
        "72deg-about-a-vertex": rotation(v[0], 2 * np.pi / 5),
        "120deg-about-a-face": rotation(v[0] + v[a] + v[b], 2 * np.pi / 3),
        "180deg-about-an-edge": rotation(v[0] + v[a], np.pi),
        "central-inversion": -np.eye(3),
        "reflection": -rotation(v[0] + v[a], np.pi),
    }


@pytest.mark.parametrize("name", list(icosahedral_symmetries()))
def test_twelve_bit_labels_are_invariant_under_icosahedral_symmetries(name):
    perm = induced_permutation(icosahedral_symmetries()[name])
    assert not np.array_equal(perm, np.arange(12))
    assert np.array_equal(labels_after_permutation(perm), twelve_bit().y)


def test_twelve_bit_labels_change_under_a_permutation_that_is_no_symmetry():
    perm = np.arange(12)
    perm[[0, 1]] = perm[[1, 0]]  # swaps two adjacent vertices only
    assert not np.array_equal(labels_after_permutation(perm), twelve_bit().y)


# --------------------------------------------------------------------------------------------
# Comparison with the original var_u
# --------------------------------------------------------------------------------------------


@needs_var_u
def test_mat_loader_reads_var_u():
    ds = load_dataset(f"mat:{VAR_U}")
    F, y = var_u()
    assert ds.x.shape == (4096, 12) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and ds.n_classes == 2 and ds.is_test is None
    assert np.array_equal(ds.x, F) and np.array_equal(ds.y, y)
    assert int(ds.y.sum()) == 2118 and ds.name == f"mat:{VAR_U}"


@needs_var_u
def test_twelve_bit_has_the_same_pattern_order_as_var_u():
    assert np.array_equal(twelve_bit().x, var_u()[0])


@needs_var_u
def test_twelve_bit_class_balance_is_within_0_05_of_var_u():
    assert abs(twelve_bit().y.mean() - var_u()[1].mean()) < 0.05


@needs_var_u
def test_twelve_bit_label_structure_by_number_of_ones_matches_var_u():
    F, y = var_u()
    ours, ones = twelve_bit().y, F.sum(1)
    for k in range(13):
        theirs_k, ours_k = y[ones == k].mean(), ours[ones == k].mean()
        assert (theirs_k in (0.0, 1.0)) == (ours_k in (0.0, 1.0)), k
        assert abs(theirs_k - ours_k) < 0.1, k


@needs_var_u
def test_twelve_bit_labels_equal_var_u_exactly():
    assert np.array_equal(twelve_bit().y, var_u()[1])


# --------------------------------------------------------------------------------------------
# Spec parsing
# --------------------------------------------------------------------------------------------


def test_unknown_spec_raises_user_error_listing_valid_forms():
    with pytest.raises(UserError) as info:
        load_dataset("cifar100")
    message = str(info.value)
    assert "cifar100" in message and "\n" not in message
    for form in ("12bit", "mnist", "fashion-mnist", "cifar10", "idx:DIR", "mat:PATH", "npz:PATH"):
        assert form in message


@pytest.mark.parametrize("spec", ["mat:", "npz:  ", "idx:"])
def test_spec_without_a_path_raises_user_error(spec):
    with pytest.raises(UserError, match="missing file path"):
        load_dataset(spec)


def test_non_string_spec_raises_user_error():
    with pytest.raises(UserError, match="string"):
        load_dataset(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# mat:PATH
# --------------------------------------------------------------------------------------------


def write_mat(path: Path, **arrays) -> str:
    scipy.io.savemat(str(path), arrays)
    return f"mat:{path}"


def test_mat_loader_accepts_a_column_label_vector(tmp_path):
    F = np.eye(4, 3, dtype=np.uint8)
    ds = load_dataset(write_mat(tmp_path / "a.mat", F=F, y=np.array([[0], [1], [2], [1]])))
    assert ds.x.dtype == np.float32 and np.array_equal(ds.x, F)
    assert np.array_equal(ds.y, [0, 1, 2, 1]) and ds.n_classes == 3


def test_mat_missing_file_raises_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_dataset(f"mat:{tmp_path / 'nope.mat'}")


def test_mat_directory_instead_of_file_raises_user_error(tmp_path):
    with pytest.raises(UserError, match="not a regular file"):
        load_dataset(f"mat:{tmp_path}")


def test_mat_corrupt_file_raises_user_error(tmp_path):
    path = tmp_path / "bad.mat"
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(UserError, match="bad.mat"):
        load_dataset(f"mat:{path}")


def test_mat_missing_key_raises_user_error_naming_it(tmp_path):
    spec = write_mat(tmp_path / "k.mat", X=np.zeros((4, 12)), y=np.array([[0, 1, 0, 1]]))
    with pytest.raises(UserError, match="missing variable 'F'"):
        load_dataset(spec)


def test_mat_three_dimensional_inputs_raise_user_error(tmp_path):
    spec = write_mat(tmp_path / "s.mat", F=np.zeros((4, 3, 2)), y=np.array([[0, 1, 0, 1]]))
    with pytest.raises(UserError, match="2-D"):
        load_dataset(spec)


def test_mat_label_matrix_raises_user_error(tmp_path):
    spec = write_mat(tmp_path / "m.mat", F=np.zeros((4, 12)), y=np.zeros((2, 2)))
    with pytest.raises(UserError, match="vector"):
        load_dataset(spec)


def test_mat_length_mismatch_raises_user_error(tmp_path):
    spec = write_mat(tmp_path / "l.mat", F=np.zeros((5, 12)), y=np.array([[0, 1, 0, 1]]))
    with pytest.raises(UserError, match="5 samples but y has 4"):
        load_dataset(spec)


def test_mat_nan_inputs_raise_user_error(tmp_path):
    F = np.zeros((4, 12))
    F[2, 3] = np.nan
    with pytest.raises(UserError, match="NaN"):
        load_dataset(write_mat(tmp_path / "n.mat", F=F, y=np.array([[0, 1, 0, 1]])))


def test_mat_non_integer_labels_raise_user_error(tmp_path):
    spec = write_mat(tmp_path / "f.mat", F=np.zeros((4, 12)), y=np.array([[0, 1.5, 0, 1]]))
    with pytest.raises(UserError, match="integers"):
        load_dataset(spec)


def test_mat_negative_labels_raise_user_error(tmp_path):
    spec = write_mat(tmp_path / "g.mat", F=np.zeros((4, 12)), y=np.array([[0, -1, 0, 1]]))
    with pytest.raises(UserError, match=">= 0"):
        load_dataset(spec)


def test_mat_single_class_raises_user_error(tmp_path):
    spec = write_mat(tmp_path / "c.mat", F=np.zeros((4, 12)), y=np.zeros((1, 4)))
    with pytest.raises(UserError, match="single class"):
        load_dataset(spec)


# --------------------------------------------------------------------------------------------
# npz:PATH
# --------------------------------------------------------------------------------------------


def write_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_loader_flattens_inputs_and_converts_types(tmp_path):
    X = np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3)
    ds = load_dataset(write_npz(tmp_path / "d.npz", X=X, y=np.array([0, 1, 1, 0, 3], dtype=np.uint8)))
    assert ds.x.shape == (5, 6) and ds.x.dtype == np.float32 and np.array_equal(ds.x, X.reshape(5, 6))
    assert ds.y.dtype == np.int64 and ds.n_classes == 4 and ds.is_test is None
    assert ds.name == f"npz:{tmp_path / 'd.npz'}"


def test_npz_loader_accepts_integral_float_labels(tmp_path):
    ds = load_dataset(write_npz(tmp_path / "d.npz", X=np.zeros((3, 2)), y=np.array([0.0, 1.0, 1.0])))
    assert np.array_equal(ds.y, [0, 1, 1]) and ds.y.dtype == np.int64


def test_npz_missing_key_raises_user_error_naming_it(tmp_path):
    spec = write_npz(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 1]))
    with pytest.raises(UserError, match="missing array 'X'"):
        load_dataset(spec)


def test_npz_corrupt_file_raises_user_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((300, 20)), y=np.zeros(300))
    path.write_bytes(path.read_bytes()[:200])  # truncated zip
    with pytest.raises(UserError, match="d.npz"):
        load_dataset(f"npz:{path}")


def test_npz_plain_npy_file_raises_user_error(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((3, 2)))
    with pytest.raises(UserError, match="not an .npz archive"):
        load_dataset(f"npz:{path}")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    spec = write_npz(tmp_path / "o.npz", X=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(UserError, match="o.npz"):
        load_dataset(spec)


def test_npz_two_dimensional_labels_raise_user_error(tmp_path):
    spec = write_npz(tmp_path / "d.npz", X=np.zeros((4, 2)), y=np.zeros((4, 2)))
    with pytest.raises(UserError, match=r"shape \(N,\)"):
        load_dataset(spec)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.zeros((4, 2)), np.array([0, 1, 2]), "4 samples but y has 3"),
        (np.array([[0.0, np.inf], [1, 1]]), np.array([0, 1]), "NaN or infinite"),
        (np.zeros((2, 2)), np.array([0, -3]), ">= 0"),
        (np.zeros((2, 2)), np.array([0.0, np.nan]), "NaN"),
        (np.zeros((2, 2)), np.array(["a", "b"]), "integers"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([0, 1]), "numeric"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), "empty"),
    ],
    ids=["length-mismatch", "infinite-inputs", "negative-labels", "nan-labels", "string-labels",
         "string-inputs", "empty"],
)
def test_npz_bad_content_raises_user_error(tmp_path, X, y, match):
    with pytest.raises(UserError, match=match):
        load_dataset(write_npz(tmp_path / "d.npz", X=X, y=y))


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture
def idx_fixture(tmp_path):
    """A tiny MNIST-like dataset (20 train + 10 test images of 28x28) as gzipped IDX files."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10, dtype=np.uint8),
    }
    served = tmp_path / "served"
    served.mkdir()
    raw, gz = {}, {}
    for stem, array in arrays.items():
        raw[stem] = idx_bytes(array)
        gz[stem] = gzip.compress(raw[stem], mtime=0)
        (served / f"{stem}.gz").write_bytes(gz[stem])
    return {"arrays": arrays, "raw": raw, "gz": gz, "dir": served,
            "checksums": {f"{s}.gz": sha256(b) for s, b in gz.items()}}


class LoopbackServer:
    """Serves a directory on 127.0.0.1 (random free port) and counts GET requests."""

    def __init__(self, directory: Path):
        outer = self
        self.requests = 0

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join(5)
            self.httpd.server_close()


@pytest.fixture
def server(idx_fixture):
    srv = LoopbackServer(idx_fixture["dir"])
    yield srv
    srv.stop()


def patch_source(monkeypatch, dataset, base_url, checksums):
    monkeypatch.setitem(data.SOURCES, dataset, {"base_url": base_url, "files": dict(checksums)})


def check_matches_fixture(ds: Dataset, fx) -> None:
    a = fx["arrays"]
    images = np.concatenate([a["train-images-idx3-ubyte"], a["t10k-images-idx3-ubyte"]]).reshape(30, 784)
    assert ds.x.shape == (30, 784) and ds.x.dtype == np.float32
    assert np.allclose(ds.x, images / 255.0) and ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert np.array_equal(ds.y, np.concatenate([a["train-labels-idx1-ubyte"], a["t10k-labels-idx1-ubyte"]]))
    assert ds.y.dtype == np.int64 and ds.n_classes == 10
    assert ds.is_test.dtype == bool and not ds.is_test[:20].any() and ds.is_test[20:].all()


def test_mnist_downloads_verifies_and_loads(monkeypatch, tmp_path, idx_fixture, server):
    patch_source(monkeypatch, "mnist", server.url, idx_fixture["checksums"])
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", data_dir=cache)
    check_matches_fixture(ds, idx_fixture)
    assert ds.name == "mnist" and "20 train + 10 test" in ds.description
    assert sorted(os.listdir(cache)) == sorted(f"{s}.gz" for s in IDX_STEMS)
    assert server.requests == 4


def test_mnist_second_load_reads_the_cache_without_the_server(monkeypatch, tmp_path, idx_fixture, server):
    patch_source(monkeypatch, "mnist", server.url, idx_fixture["checksums"])
    cache = tmp_path / "cache"
    first = load_dataset("mnist", data_dir=cache)
    server.stop()
    second = load_dataset("mnist", data_dir=cache)
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)
    assert server.requests == 4


def test_mnist_download_checksum_mismatch_raises_and_leaves_no_file(monkeypatch, tmp_path, idx_fixture, server):
    checksums = dict(idx_fixture["checksums"])
    checksums["train-images-idx3-ubyte.gz"] = "0" * 64
    patch_source(monkeypatch, "mnist", server.url, checksums)
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="checksum mismatch") as info:
        load_dataset("mnist", data_dir=cache)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert os.listdir(cache) == []


def test_mnist_download_failure_raises_user_error(monkeypatch, tmp_path, idx_fixture, server):
    (idx_fixture["dir"] / "t10k-labels-idx1-ubyte.gz").unlink()
    patch_source(monkeypatch, "mnist", server.url, idx_fixture["checksums"])
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="download failed.*HTTP 404"):
        load_dataset("mnist", data_dir=cache)
    assert not any(name.endswith(".part") for name in os.listdir(cache))


def test_mnist_unreachable_mirror_raises_user_error(monkeypatch, tmp_path, idx_fixture, server):
    url = server.url
    server.stop()
    patch_source(monkeypatch, "mnist", url, idx_fixture["checksums"])
    with pytest.raises(UserError, match="download failed") as info:
        load_dataset("mnist", data_dir=tmp_path / "cache")
    assert "IBTUI_MNIST_MIRROR" in str(info.value)


def test_mnist_mirror_env_var_overrides_the_base_url(monkeypatch, tmp_path, idx_fixture, server):
    patch_source(monkeypatch, "mnist", "http://127.0.0.1:9/nowhere/", idx_fixture["checksums"])
    monkeypatch.setenv("IBTUI_MNIST_MIRROR", server.url.rstrip("/"))
    check_matches_fixture(load_dataset("mnist", data_dir=tmp_path / "cache"), idx_fixture)


def test_mnist_default_cache_is_ibtui_cache_slash_dataset(monkeypatch, tmp_path, idx_fixture, server):
    patch_source(monkeypatch, "mnist", server.url, idx_fixture["checksums"])
    monkeypatch.setenv("IBTUI_CACHE", str(tmp_path / "root"))
    load_dataset("mnist")
    assert sorted(os.listdir(tmp_path / "root" / "mnist")) == sorted(f"{s}.gz" for s in IDX_STEMS)


def test_fashion_mnist_uses_its_own_source_and_mirror_variable(monkeypatch, tmp_path, idx_fixture, server):
    patch_source(monkeypatch, "fashion-mnist", "http://127.0.0.1:9/nowhere/", idx_fixture["checksums"])
    monkeypatch.setenv("IBTUI_FASHION_MNIST_MIRROR", server.url)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "cache")
    check_matches_fixture(ds, idx_fixture)
    assert ds.name == "fashion-mnist" and ds.description.startswith("Fashion-MNIST")


def test_mnist_reads_uncompressed_files_from_data_dir_without_network(monkeypatch, tmp_path, idx_fixture):
    patch_source(monkeypatch, "mnist", "http://127.0.0.1:9/nowhere/", idx_fixture["checksums"])
    local = tmp_path / "local"
    local.mkdir()
    for stem, blob in idx_fixture["raw"].items():
        (local / stem).write_bytes(blob)
    check_matches_fixture(load_dataset("mnist", data_dir=local), idx_fixture)


def test_mnist_cached_file_with_wrong_checksum_raises_user_error(monkeypatch, tmp_path, idx_fixture):
    patch_source(monkeypatch, "mnist", "http://127.0.0.1:9/nowhere/", idx_fixture["checksums"])
    local = tmp_path / "local"
    local.mkdir()
    for stem, blob in idx_fixture["gz"].items():
        (local / f"{stem}.gz").write_bytes(blob)
    (local / "t10k-images-idx3-ubyte.gz").write_bytes(idx_fixture["gz"]["train-images-idx3-ubyte"])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: checksum mismatch"):
        load_dataset("mnist", data_dir=local)


def serve_tampered(monkeypatch, idx_fixture, server, stem, blob, gzipped=True):
    """Replace one served file by ``blob`` (gzipped unless told) with a matching checksum."""
    payload = gzip.compress(blob, mtime=0) if gzipped else blob
    (idx_fixture["dir"] / f"{stem}.gz").write_bytes(payload)
    checksums = dict(idx_fixture["checksums"], **{f"{stem}.gz": sha256(payload)})
    patch_source(monkeypatch, "mnist", server.url, checksums)


def test_mnist_corrupt_idx_header_raises_user_error(monkeypatch, tmp_path, idx_fixture, server):
    blob = b"\x08\x03\x00\x00" + idx_fixture["raw"]["train-images-idx3-ubyte"][4:]
    serve_tampered(monkeypatch, idx_fixture, server, "train-images-idx3-ubyte", blob)
    with pytest.raises(UserError, match="not an IDX file"):
        load_dataset("mnist", data_dir=tmp_path / "cache")


def test_mnist_truncated_idx_data_raises_user_error(monkeypatch, tmp_path, idx_fixture, server):
    blob = idx_fixture["raw"]["t10k-images-idx3-ubyte"][:-100]
    serve_tampered(monkeypatch, idx_fixture, server, "t10k-images-idx3-ubyte", blob)
    with pytest.raises(UserError, match="corrupt IDX file"):
        load_dataset("mnist", data_dir=tmp_path / "cache")


def test_mnist_corrupt_gzip_raises_user_error(monkeypatch, tmp_path, idx_fixture, server):
    serve_tampered(monkeypatch, idx_fixture, server, "train-labels-idx1-ubyte", b"not gzip data", gzipped=False)
    with pytest.raises(UserError, match="cannot read gzip file"):
        load_dataset("mnist", data_dir=tmp_path / "cache")


def test_mnist_image_and_label_count_mismatch_raises_user_error(monkeypatch, tmp_path, idx_fixture, server):
    labels = idx_bytes(np.zeros(7, dtype=np.uint8))
    serve_tampered(monkeypatch, idx_fixture, server, "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(UserError, match="10 images but t10k-labels-idx1-ubyte.gz has 7 labels"):
        load_dataset("mnist", data_dir=tmp_path / "cache")


def test_sources_pin_a_sha256_for_each_official_file():
    for dataset in ("mnist", "fashion-mnist"):
        source = data.SOURCES[dataset]
        assert source["base_url"].startswith(("https://", "http://"))
        assert sorted(source["files"]) == sorted(f"{s}.gz" for s in IDX_STEMS)
        for digest in source["files"].values():
            assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    digests = list(itertools.chain.from_iterable(s["files"].values() for s in data.SOURCES.values()))
    assert len(set(digests)) == len(digests)


# --------------------------------------------------------------------------------------------
# idx:DIR (any MNIST-format directory)
# --------------------------------------------------------------------------------------------


def write_idx_dir(folder: Path, fx, gzipped: dict[str, bool]) -> Path:
    folder.mkdir()
    for stem in IDX_STEMS:
        if gzipped[stem]:
            (folder / f"{stem}.gz").write_bytes(fx["gz"][stem])
        else:
            (folder / stem).write_bytes(fx["raw"][stem])
    return folder


def test_idx_directory_reads_gz_and_plain_files_alike(tmp_path, idx_fixture):
    folder = write_idx_dir(tmp_path / "notmnist", idx_fixture, {stem: i % 2 == 0 for i, stem in enumerate(IDX_STEMS)})
    ds = load_dataset(f"idx:{folder}")
    check_matches_fixture(ds, idx_fixture)
    assert ds.name == f"idx:{folder}" and ds.shape == (1, 28, 28) and "20 train + 10 test" in ds.description


def test_idx_directory_with_a_malformed_header_is_one_line(tmp_path, idx_fixture):
    folder = write_idx_dir(tmp_path / "kmnist", idx_fixture, dict.fromkeys(IDX_STEMS, False))
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00")  # header cut short
    with pytest.raises(UserError, match="train-labels-idx1-ubyte: corrupt IDX file .truncated header.") as info:
        load_dataset(f"idx:{folder}")
    assert "\n" not in str(info.value)


def test_idx_directory_missing_a_file_names_it(tmp_path, idx_fixture):
    folder = write_idx_dir(tmp_path / "emnist", idx_fixture, dict.fromkeys(IDX_STEMS, True))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"missing t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"):
        load_dataset(f"idx:{folder}")


@pytest.mark.parametrize("shape", [(0, 28, 28), (10, 0, 28)], ids=["empty test split", "zero features"])
def test_idx_directory_with_no_test_images_or_no_pixels_is_refused(tmp_path, idx_fixture, shape):
    folder = write_idx_dir(tmp_path / "data", idx_fixture, dict.fromkeys(IDX_STEMS, False))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(shape, dtype=np.uint8)))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(shape[0], dtype=np.uint8)))
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte: no samples or no pixels"):
        load_dataset(f"idx:{folder}")


def test_idx_spec_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------------------------
# CIFAR-10 (binary archive)
# --------------------------------------------------------------------------------------------

CIFAR_MEMBERS = [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] + ["cifar-10-batches-bin/test_batch.bin"]


def cifar_archive(records_per_member: int = 3, members=CIFAR_MEMBERS, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(a tar.gz laid out as cifar-10-binary.tar.gz, labels, images (N, 3072) uint8) in member order."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, records_per_member * len(members)).astype(np.uint8)
    images = rng.integers(0, 256, (len(labels), 3072)).astype(np.uint8)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, name in enumerate(members):
            rows = slice(i * records_per_member, (i + 1) * records_per_member)
            blob = np.concatenate([labels[rows, None], images[rows]], axis=1).tobytes()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue(), labels, images


@pytest.fixture
def cifar_served(tmp_path, monkeypatch):
    """The generated archive served on loopback, ``CIFAR10`` patched to its size and SHA-256."""
    blob, labels, images = cifar_archive()
    folder = tmp_path / "cifar-served"
    folder.mkdir()
    (folder / "cifar-10-binary.tar.gz").write_bytes(blob)
    srv = LoopbackServer(folder)
    monkeypatch.setitem(data.CIFAR10, "base_url", srv.url)
    monkeypatch.setitem(data.CIFAR10, "size", len(blob))
    monkeypatch.setitem(data.CIFAR10, "sha256", sha256(blob))
    yield {"server": srv, "blob": blob, "labels": labels, "images": images, "dir": folder}
    srv.stop()


def test_cifar10_ships_the_binary_archive_size_and_checksum():
    assert data.CIFAR10["base_url"] == "https://www.cs.toronto.edu/~kriz/"
    assert data.CIFAR10["file"] == "cifar-10-binary.tar.gz" and data.CIFAR10["size"] == 170_052_171
    assert data.CIFAR10["sha256"] == "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"


def test_cifar10_downloads_verifies_and_loads_train_then_test(tmp_path, cifar_served):
    ds = load_dataset("cifar10", data_dir=tmp_path / "cache")
    assert ds.x.shape == (18, 3072) and ds.shape == (3, 32, 32) and ds.n_classes == 10
    np.testing.assert_array_equal(ds.y, cifar_served["labels"].astype(np.int64))
    np.testing.assert_allclose(ds.x, cifar_served["images"] / np.float32(255.0))
    assert ds.is_test.tolist() == [False] * 15 + [True] * 3
    assert os.listdir(tmp_path / "cache") == ["cifar-10-binary.tar.gz"] and cifar_served["server"].requests == 1


def test_cifar10_second_load_reads_the_cache_without_the_server(tmp_path, cifar_served):
    first = load_dataset("cifar10", data_dir=tmp_path / "cache")
    cifar_served["server"].stop()
    second = load_dataset("cifar10", data_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.x, second.x)
    assert cifar_served["server"].requests == 1


def test_cifar10_download_with_a_bad_checksum_leaves_no_file(tmp_path, cifar_served, monkeypatch):
    monkeypatch.setitem(data.CIFAR10, "sha256", "0" * 64)
    with pytest.raises(UserError, match="cifar10: checksum mismatch.*the file was discarded"):
        load_dataset("cifar10", data_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


def test_cifar10_truncated_download_is_refused_and_leaves_no_file(tmp_path, cifar_served):
    full = cifar_served["blob"]
    (cifar_served["dir"] / "cifar-10-binary.tar.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(UserError, match=f"truncated: {len(full) // 2} bytes, expected {len(full)}"):
        load_dataset("cifar10", data_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


def test_cifar10_interrupted_download_is_refused_and_leaves_no_file(tmp_path, cifar_served, monkeypatch):
    full = cifar_served["blob"]

    class CutHandler(SimpleHTTPRequestHandler):
        def do_GET(self):  # announces the whole file, sends half of it, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(full)))
            self.end_headers()
            self.wfile.write(full[: len(full) // 2])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CutHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("IBTUI_CIFAR10_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(UserError, match=f"cifar10: download of .* was interrupted after {len(full) // 2} of {len(full)} bytes.*IBTUI_CIFAR10_MIRROR"):
            load_dataset("cifar10", data_dir=tmp_path / "cache")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert os.listdir(tmp_path / "cache") == []


def test_cifar10_truncated_cached_archive_asks_to_delete_it(tmp_path, cifar_served):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-binary.tar.gz").write_bytes(cifar_served["blob"][:100])
    with pytest.raises(UserError, match="100 bytes, expected .* delete the file"):
        load_dataset("cifar10", data_dir=cache)
    assert cifar_served["server"].requests == 0


def test_cifar10_archive_without_a_batch_is_refused_naming_it(tmp_path, cifar_served, monkeypatch):
    blob, _, _ = cifar_archive(members=CIFAR_MEMBERS[:-1])  # no test_batch.bin
    (cifar_served["dir"] / "cifar-10-binary.tar.gz").write_bytes(blob)
    monkeypatch.setitem(data.CIFAR10, "size", len(blob))
    monkeypatch.setitem(data.CIFAR10, "sha256", sha256(blob))
    with pytest.raises(UserError, match="no cifar-10-batches-bin/test_batch.bin in the archive"):
        load_dataset("cifar10", data_dir=tmp_path / "cache")
