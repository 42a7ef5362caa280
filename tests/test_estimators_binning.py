"""Binning estimators against exact answers: enumerated cases, a dict-counting reference, bounds."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from conftest import mi_samples
from ibtui.errors import UserError
from ibtui.estimators import Binning, FixedBinning, MISet
from ibtui.estimators.binning import binned_plane, row_ids

BOTH = [FixedBinning(), Binning()]
BITS_12 = np.array([[(i >> k) & 1 for k in range(12)] for i in range(4096)], dtype=np.float64)


def make_mi_set(x_ids, y) -> MISet:
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return MISet(torch.as_tensor(np.asarray(x_ids), dtype=torch.int64), y, int(y.max()) + 1)


def one_layer(est, layer, x_ids, y) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) of a single layer given as an array (N, d) or (N,)."""
    layer = torch.as_tensor(np.asarray(layer, dtype=np.float64).reshape(len(layer), -1))
    (ixt, ity), = est.estimate([layer], make_mi_set(x_ids, y)).values()
    return float(ixt[0]), float(ity[0])


def entropy_bits(probs) -> float:
    return -sum(p * math.log2(p) for p in probs if p > 0)


def reference_plane(codes: np.ndarray, x_ids, y) -> tuple[float, float]:
    """Plug-in MI the way the anchors do it: count rows, loop over each input and each label."""
    rows = [tuple(r) for r in codes.tolist()]

    def h(keys) -> float:
        counts = np.array(list(Counter(keys).values()), dtype=np.float64)
        return entropy_bits(counts / counts.sum())

    def h_given(given) -> float:
        given = np.asarray(given)
        return sum(np.mean(given == g) * h([rows[i] for i in np.flatnonzero(given == g)]) for g in np.unique(given))

    return h(rows) - h_given(x_ids), h(rows) - h_given(y)


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
def test_all_distinct_binned_rows_of_4096_inputs_give_12_bits(est):
    ixt, _ = one_layer(est, BITS_12, np.arange(4096), np.zeros(4096, dtype=int))
    assert ixt == pytest.approx(12.0, abs=1e-12)


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
def test_constant_layer_gives_zero(est):
    ixt, ity = one_layer(est, np.full((64, 3), 0.3), np.arange(64), np.arange(64) % 2)
    assert (ixt, ity) == (0.0, 0.0)


def test_k_valued_function_with_equal_preimages_gives_log2_k():
    ids = np.arange(3 * 256)
    layer = np.stack([ids % 3, np.full(len(ids), 5.0)], axis=1)  # 3 values, 256 inputs each
    ixt, _ = one_layer(Binning(bin_size=1.0), layer, ids, np.zeros(len(ids), dtype=int))
    assert ixt == pytest.approx(math.log2(3), abs=1e-12)


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
def test_ity_equals_h_y_when_t_determines_y(est):
    y = np.zeros(4096, dtype=int)
    y[np.random.default_rng(0).permutation(4096)[:2117]] = 1  # p(y=1) = 0.517, as in the 12-bit data
    _, ity = one_layer(est, BITS_12, np.arange(4096), y)
    assert ity == pytest.approx(entropy_bits([2117 / 4096, 1979 / 4096]), abs=1e-12)


def test_ity_is_zero_when_t_is_independent_of_y_by_construction():
    ids = np.arange(16)
    # T = id // 2 pairs each even id (y=0) with an odd one (y=1): p(y|t) = 1/2 for every t.
    ixt, ity = one_layer(Binning(bin_size=1.0), ids // 2, ids, ids % 2)
    assert ixt == pytest.approx(3.0, abs=1e-12)
    assert ity == pytest.approx(0.0, abs=1e-12)


def test_repeated_inputs_with_varying_t_give_hand_computed_conditional_entropy():
    # Input 0 is seen 4 times with T = a, a, b, c; input 1 four times with T = a, d, d, d.
    a, b, c, d = 0.0, 1.0, 2.0, 3.0
    layer = [a, a, b, c, a, d, d, d]
    x_ids = [0, 0, 0, 0, 1, 1, 1, 1]
    h_t = entropy_bits([3 / 8, 1 / 8, 1 / 8, 3 / 8])
    h_t_given_x = 0.5 * entropy_bits([2 / 4, 1 / 4, 1 / 4]) + 0.5 * entropy_bits([1 / 4, 3 / 4])
    ixt, _ = one_layer(Binning(bin_size=1.0), layer, x_ids, np.zeros(8, dtype=int))
    assert h_t_given_x > 0
    assert ixt == pytest.approx(h_t - h_t_given_x, abs=1e-12)


def test_relu_values_above_high_share_the_top_bin_in_fixed_binning_only():
    layer, ids, y = [0.5, 1.0, 3.0, 7.0], np.arange(4), np.zeros(4, dtype=int)
    assert one_layer(FixedBinning(), layer, ids, y)[0] == pytest.approx(entropy_bits([1 / 4, 3 / 4]), abs=1e-12)
    assert one_layer(Binning(), layer, ids, y)[0] == pytest.approx(2.0, abs=1e-12)


def test_fixed_binning_values_below_low_share_a_bottom_cell_apart_from_the_first_interval():
    ixt, _ = one_layer(FixedBinning(), [-5.0, -1.5, -0.99], np.arange(3), np.zeros(3, dtype=int))
    assert ixt == pytest.approx(entropy_bits([2 / 3, 1 / 3]), abs=1e-12)


def test_fixed_binning_bins_counts_edges_not_intervals():
    layer, ids, y = [0.1, 0.4, 0.6, 0.9], np.arange(4), np.zeros(4, dtype=int)
    assert one_layer(FixedBinning(bins=2, low=0.0, high=1.0), layer, ids, y)[0] == pytest.approx(0.0, abs=1e-12)
    assert one_layer(FixedBinning(bins=3, low=0.0, high=1.0), layer, ids, y)[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("est, to_codes", [
    (FixedBinning(bins=8), lambda a: np.digitize(a, np.linspace(-1.0, 1.0, 8))),
    (Binning(bin_size=0.3), lambda a: np.floor(a / 0.3).astype(np.int64)),
], ids=["binning_fixed", "binning"])
def test_matches_dict_counting_reference_on_random_noisy_activations(est, to_codes):
    rng = np.random.default_rng(1)
    n = 600
    x_ids = rng.integers(0, 150, n)  # repeated inputs
    y = rng.integers(0, 3, n)
    layers = [np.tanh(rng.normal(size=(150, d))[x_ids] + 0.3 * rng.normal(size=(n, d))) for d in (3, 2)]
    ixt, ity = est.estimate([torch.as_tensor(a) for a in layers], make_mi_set(x_ids, y))[est.kind]
    expected = np.array([reference_plane(to_codes(a), x_ids, y) for a in layers])
    np.testing.assert_allclose(ixt, expected[:, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(ity, expected[:, 1], rtol=0, atol=1e-10)


def test_row_ids_stay_exact_when_packed_codes_would_overflow_int64():
    rng = np.random.default_rng(2)
    scale = np.array([2**20, 2**20, 2**20, 2**61, 2**20, 2**20])  # overflows both with and without a huge column
    distinct = rng.integers(-scale, scale, size=(40, 6))
    codes = distinct[rng.integers(0, 40, 200)]
    ids = row_ids(torch.as_tensor(codes)).numpy()
    _, expected = np.unique(codes, axis=0, return_inverse=True)
    pairs = set(zip(ids.tolist(), expected.reshape(-1).tolist()))
    assert len(pairs) == len(set(ids.tolist())) == len(set(expected.reshape(-1).tolist()))


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
@settings(max_examples=60, deadline=None)
@given(sample=mi_samples())
def test_mi_stays_within_zero_and_the_plug_in_entropies(est, sample):
    layer, x_ids, y = sample
    mi_set = make_mi_set(x_ids, y)
    ixt, ity = one_layer(est, layer, x_ids, y)
    assert 0.0 <= ixt <= mi_set.h_x + 1e-9
    assert 0.0 <= ity <= mi_set.h_y + 1e-9


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
def test_estimate_returns_one_float64_value_per_layer(est):
    layers = [torch.rand(10, 3), torch.rand(10, 2), torch.rand(10, 1)]
    planes = est.estimate(layers, make_mi_set(np.arange(10), np.arange(10) % 2))
    assert tuple(planes) == est.planes == (est.kind,)
    for values in planes[est.kind]:
        assert values.dtype == np.float64 and values.shape == (3,)


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_activations_raise(est, bad):
    layer = torch.zeros(4, 2, dtype=torch.float64)
    layer[2, 1] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        est.estimate([layer], make_mi_set(np.arange(4), np.zeros(4, dtype=int)))


@pytest.mark.parametrize("est, fragment", [
    (lambda: FixedBinning(bins=1), "bins must be >= 2"),
    (lambda: FixedBinning(low=1.0, high=1.0), "low < high"),
    (lambda: FixedBinning(low=-math.inf), "low < high"),
    (lambda: FixedBinning(high=math.nan), "low < high"),
    (lambda: Binning(bin_size=0.0), "bin_size"),
    (lambda: Binning(bin_size=-0.1), "bin_size"),
    (lambda: Binning(bin_size=math.inf), "bin_size"),
    (lambda: Binning(bin_size=math.nan), "bin_size"),
])
def test_validate_rejects_impossible_parameters_in_one_line(est, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        est().validate()  # construction validates
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("est", [FixedBinning(), Binning(), FixedBinning(bins=2, low=0.0, high=5.0)])
def test_validate_accepts_defaults_and_sensible_parameters(est):
    est.validate()


# ---- the fast counting paths (packed row ids, bincount / int32 / int64 sorts, all-distinct shortcut)
def brute_force_plane(codes: np.ndarray, x_ids, y) -> tuple[float, float]:
    """I(X;T), I(T;Y) from joint counts of tuples: H(T) − (H(X,T) − H(X)), H(T) − (H(T,Y) − H(Y))."""
    rows = [tuple(r) for r in np.asarray(codes).tolist()]
    x_ids, y = np.asarray(x_ids).tolist(), np.asarray(y).tolist()

    def h(keys) -> float:
        counts = np.array(list(Counter(keys).values()), dtype=np.float64)
        return entropy_bits(counts / counts.sum())

    h_t = h(rows)
    return (h_t - (h(list(zip(x_ids, rows))) - h(x_ids)), h_t - (h(list(zip(rows, y))) - h(y)))


@pytest.mark.parametrize("case", ["narrow", "int32_sort", "int64_sort", "overflow", "huge_columns"])
@pytest.mark.parametrize("distinct_inputs", [True, False])
def test_binned_plane_matches_brute_force_counting_on_every_counting_path(case, distinct_inputs):
    rng = np.random.default_rng(["narrow", "int32_sort", "int64_sort", "overflow", "huge_columns"].index(case))
    n = 500
    scale, d = {"narrow": (2, 3), "int32_sort": (6, 8), "int64_sort": (30, 12), "overflow": (2**20, 9),
                "huge_columns": (2**62, 4)}[case]
    layers = [rng.integers(-scale, scale, size=(n // 3, d))[rng.integers(0, n // 3, n)] for _ in range(3)]
    layers.append(rng.integers(-scale, scale, size=(n, 2 * d)))  # all rows distinct
    x_ids = rng.permutation(n) if distinct_inputs else rng.integers(0, n // 4, n) * 7 + 3
    y = rng.integers(0, 3, n)
    ixt, ity = binned_plane([torch.as_tensor(c) for c in layers], make_mi_set(x_ids, y))
    expected = np.array([brute_force_plane(c, x_ids, y) for c in layers])
    np.testing.assert_allclose(ixt, expected[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ity, expected[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("est, to_codes", [
    (FixedBinning(bins=12), lambda a: np.digitize(a, np.linspace(-1.0, 1.0, 12))),
    (Binning(bin_size=0.2), lambda a: np.floor(a / 0.2).astype(np.int64)),
], ids=["binning_fixed", "binning"])
def test_pooled_mi_set_with_noisy_copies_matches_brute_force(est, to_codes):
    rng = np.random.default_rng(3)
    base = MISet.from_arrays(np.arange(64)[:, None], rng.integers(0, 2, 64))
    pooled = base.pooled(5)  # each input 5 times, its binned rows differ between copies: H(T|X) > 0
    clean = np.tanh(rng.normal(size=(64, 2)))
    layer = np.tanh(np.arctanh(clean)[np.tile(np.arange(64), 5)] + 0.4 * rng.normal(size=(320, 2)))
    (ixt,), (ity,) = est.estimate([torch.as_tensor(layer)], pooled)[est.kind]
    expected_ixt, expected_ity = brute_force_plane(to_codes(layer), pooled.x_ids.numpy(), pooled.y.numpy())
    assert expected_ixt < pooled.h_x - 0.5  # the repeats really do spread over bins
    assert ixt == pytest.approx(expected_ixt, abs=1e-12)
    assert ity == pytest.approx(expected_ity, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_codes_equal_torchs_floor_and_bucketize_codes_also_on_bin_edges(dtype):
    rng = np.random.default_rng(4)
    edges = np.linspace(-1.0, 1.0, 30)
    values = np.concatenate([rng.uniform(-1.3, 1.3, 3000), edges, np.nextafter(edges, 2), np.nextafter(edges, -2),
                             np.arange(-15, 16) * 0.07, [0.0, -0.0, 5.0, -5.0]])
    values = values[: len(values) // 3 * 3].reshape(-1, 3)
    layers = [torch.as_tensor(values, dtype=dtype), torch.as_tensor(values[:, :1].copy(), dtype=dtype)]
    mi_set = make_mi_set(np.arange(len(values)) // 2, np.arange(len(values)) % 3)
    for est, torch_codes in [
        (Binning(bin_size=0.07), lambda h: torch.floor(h / 0.07).long()),
        (FixedBinning(), lambda h: torch.bucketize(h, torch.as_tensor(edges, dtype=h.dtype), right=True)),
    ]:
        fast = est.estimate(layers, mi_set)[est.kind]
        expected = binned_plane([torch_codes(h) for h in layers], mi_set)
        np.testing.assert_array_equal(np.stack(fast), np.stack(expected))


def test_edge_index_equals_searchsorted_for_uneven_and_tiny_edge_spacings():
    from ibtui.estimators.binning import _edge_index

    rng = np.random.default_rng(5)
    for low, high, bins, dtype in [(-1.0, 1.0, 30, np.float32), (0.0, 1e-6, 7, np.float32),
                                   (-3.0, 17.0, 2, np.float64), (0.0, 1e-300, 5, np.float64)]:
        edges = np.linspace(low, high, bins).astype(dtype)
        values = np.concatenate([rng.uniform(low - (high - low), high + (high - low), 999), edges,
                                 np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), [1e30, -1e30]])
        values = values.astype(dtype).reshape(-1, 1)
        np.testing.assert_array_equal(_edge_index(values, edges), np.searchsorted(edges, values, side="right"))


@pytest.mark.parametrize("est", BOTH, ids=lambda e: e.kind)
def test_one_sample_and_mixed_dtypes_and_non_numpy_dtypes(est):
    one = est.estimate([torch.tensor([[0.3, -0.2]])], make_mi_set([0], [0]))[est.kind]
    assert (one[0][0], one[1][0]) == (0.0, 0.0)
    rng = np.random.default_rng(6)
    a = np.tanh(rng.normal(size=(200, 3)))
    mi_set = make_mi_set(np.arange(200), np.arange(200) % 2)
    mixed = est.estimate([torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(a)], mi_set)[est.kind]
    half = est.estimate([torch.as_tensor(a, dtype=torch.float16)], mi_set)[est.kind]  # the torch path
    assert np.all(np.isfinite(np.stack(mixed))) and np.all(np.isfinite(np.stack(half)))
    assert 0.0 < half[0][0] <= math.log2(200) + 1e-12
