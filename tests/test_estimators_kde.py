"""KDE bounds against numerical integration, limiting cases and a literal port of ibsgd's code."""

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from ibtui.errors import UserError
from ibtui.estimators import KDE, MISet


def make_mi_set(y) -> MISet:
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return MISet(torch.arange(len(y)), y, int(y.max()) + 1)


def bounds(points, y, noise_variance, **kw) -> dict[str, tuple[float, float]]:
    """{plane: (I(X;T), I(T;Y))} of one layer whose activations are ``points`` (N, d)."""
    layer = torch.as_tensor(np.asarray(points, dtype=np.float64))
    planes = KDE(noise_variance=noise_variance, **kw).estimate([layer], make_mi_set(y))
    return {name: (float(ixt[0]), float(ity[0])) for name, (ixt, ity) in planes.items()}


# ---- ibsgd (Saxe et al.) kde.py and its use in MI computation, ported literally to numpy/scipy.
def Kget_dists(X):
    x2 = np.expand_dims(np.sum(np.square(X), axis=1), 1)
    return x2 + x2.T - 2 * X @ X.T


def entropy_estimator_kl(x, var):
    N, dims = x.shape
    dists2 = Kget_dists(x) / (2 * var)
    normconst = (dims / 2.0) * np.log(2 * np.pi * var)
    lprobs = logsumexp(-dists2, axis=1) - np.log(N) - normconst
    h = -np.mean(lprobs, axis=0)
    return dims / 2 + h


def entropy_estimator_bd(x, var):
    dims = x.shape[1]
    val = entropy_estimator_kl(x, 4 * var)
    return val + np.log(0.25) * dims / 2


def kde_condentropy(output, var):
    dims = output.shape[1]
    return (dims / 2.0) * (np.log(2 * np.pi * var) + 1)


def ibsgd_plane(activity, labels, noise_variance, entropy_func):
    nats2bits = 1.0 / np.log(2)
    h = entropy_func(activity, noise_variance)
    hM_given_X = kde_condentropy(activity, noise_variance)
    hM_given_Y = 0.0
    for c in np.unique(labels):
        hM_given_Y += np.mean(labels == c) * entropy_func(activity[labels == c, :], noise_variance)
    return nats2bits * (h - hM_given_X), nats2bits * (h - hM_given_Y)


def true_ixt_bits(points, noise_variance, axes) -> float:
    """I(X; T+ε) for X uniform on the points: mixture entropy on a fine grid minus the noise entropy."""
    points = np.asarray(points, dtype=np.float64)
    grids = np.meshgrid(*axes, indexing="ij")
    t = np.stack([g.ravel() for g in grids], axis=1)
    d = points.shape[1]
    sq = ((t[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
    density = np.exp(-sq / (2 * noise_variance)).mean(axis=1) / (2 * np.pi * noise_variance) ** (d / 2)
    cell = np.prod([a[1] - a[0] for a in axes])
    h_mixture = -np.sum(density * np.log(np.where(density > 0, density, 1.0))) * cell
    return (h_mixture - (d / 2) * (math.log(2 * math.pi * noise_variance) + 1)) / math.log(2)


@pytest.mark.parametrize("points, axes", [
    ([[0.0], [0.05], [0.3], [0.32]], [np.arange(-1.0, 1.5, 1e-4)]),
    ([[0.0, 0.0], [0.1, 0.0], [0.0, 0.15], [0.3, 0.3], [0.05, 0.05]], [np.arange(-0.7, 1.0, 0.005)] * 2),
], ids=["1d", "2d"])
def test_bounds_bracket_numerically_integrated_ixt_of_the_noisy_layer(points, axes):
    var = 0.01
    true = true_ixt_bits(points, var, axes)
    b = bounds(points, np.zeros(len(points), dtype=int), var)
    lower, upper = b["kde_lower"][0], b["kde_upper"][0]
    assert upper - lower > 0.05  # the bracket is not trivially tight here
    assert lower - 1e-9 <= true <= upper + 1e-9


def test_identical_points_give_zero():
    for ixt, ity in bounds(np.full((20, 3), 0.4), np.arange(20) % 2, 1e-3).values():
        assert ixt == pytest.approx(0.0, abs=1e-12)  # the ‖a‖²+‖b‖²−2ab expansion leaves ~1e-16 distances
        assert ity == pytest.approx(0.0, abs=1e-12)


def test_points_far_apart_give_log2_n_and_h_y():
    points = [[10.0 * i, 0.0] for i in range(6)]
    y = [0, 0, 0, 1, 1, 2]  # class 2 has a single sample
    h_y = -sum(p * math.log2(p) for p in (1 / 2, 1 / 3, 1 / 6))
    for ixt, ity in bounds(points, y, 1e-3).values():
        assert ixt == pytest.approx(math.log2(6), abs=1e-12)
        assert ity == pytest.approx(h_y, abs=1e-12)


def test_single_sample_gives_zero():
    assert bounds([[0.2, -0.1]], [0], 1e-3) == {"kde_upper": (0.0, 0.0), "kde_lower": (0.0, 0.0)}


@pytest.mark.parametrize("var", [1e-3, 0.05])
def test_matches_literal_port_of_ibsgd_code(var):
    rng = np.random.default_rng(0)
    activity = np.tanh(rng.normal(size=(300, 5)))
    labels = rng.integers(0, 3, 300)
    b = bounds(activity, labels, var)
    np.testing.assert_allclose(b["kde_upper"], ibsgd_plane(activity, labels, var, entropy_estimator_kl), rtol=1e-9)
    np.testing.assert_allclose(b["kde_lower"], ibsgd_plane(activity, labels, var, entropy_estimator_bd), rtol=1e-9)


def test_chunked_result_equals_unchunked():
    rng = np.random.default_rng(1)
    activity, labels = np.tanh(rng.normal(size=(101, 3))), rng.integers(0, 3, 101)
    chunked = bounds(activity, labels, 0.01, chunk_size=7)
    whole = bounds(activity, labels, 0.01, chunk_size=4096)
    for plane in whole:
        np.testing.assert_allclose(chunked[plane], whole[plane], rtol=1e-12)


def test_invariant_to_permuting_samples():
    rng = np.random.default_rng(2)
    activity, labels = np.tanh(rng.normal(size=(80, 4))), rng.integers(0, 2, 80)
    perm = rng.permutation(80)
    original = bounds(activity, labels, 0.01)
    permuted = bounds(activity[perm], labels[perm], 0.01)
    for plane in original:
        np.testing.assert_allclose(permuted[plane], original[plane], rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    points=st.integers(1, 20).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 2), elements=st.floats(-1.0, 1.0))),
    var=st.floats(1e-4, 1.0),
)
def test_ixt_bounds_are_ordered_within_zero_and_log2_n(points, var):
    b = bounds(points, np.zeros(len(points), dtype=int), var)
    lower, upper = b["kde_lower"][0], b["kde_upper"][0]
    assert -1e-12 <= lower <= upper + 1e-12 <= math.log2(len(points)) + 2e-12


def test_estimate_returns_both_planes_with_one_float64_value_per_layer():
    layers = [torch.rand(10, 3), torch.rand(10, 2, dtype=torch.float64), torch.rand(10, 1)]
    est = KDE()
    planes = est.estimate(layers, make_mi_set(np.arange(10) % 2))
    assert tuple(planes) == est.planes == ("kde_upper", "kde_lower")
    for ixt, ity in planes.values():
        assert ixt.dtype == ity.dtype == np.float64 and ixt.shape == ity.shape == (3,)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_activations_raise(bad):
    layer = torch.zeros(4, 2)
    layer[1, 0] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        KDE().estimate([layer], make_mi_set([0, 1, 0, 1]))


@pytest.mark.parametrize("est, fragment", [
    (lambda: KDE(noise_variance=0.0), "noise_variance"),
    (lambda: KDE(noise_variance=-1e-3), "noise_variance"),
    (lambda: KDE(noise_variance=math.inf), "noise_variance"),
    (lambda: KDE(noise_variance=math.nan), "noise_variance"),
    (lambda: KDE(chunk_size=0), "chunk_size"),
    (lambda: KDE(precision="float16"), "precision"),
])
def test_validate_rejects_impossible_parameters_in_one_line(est, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        est().validate()  # construction validates
    assert "\n" not in str(info.value)


def test_validate_accepts_defaults():
    KDE().validate()


# ---- the fast path (class-ordered sums, symmetric blocks, clamped exponents, 4th powers) vs the formula
def direct_kde_bits(points: np.ndarray, labels: np.ndarray, variance: float) -> tuple[float, float]:
    """The module docstring's formulas, directly: full float64 distance matrix and logsumexp."""
    n = len(points)
    dists = ((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
    log_kernel = -dists / (2 * variance)
    log_all = logsumexp(log_kernel, axis=1) - np.log(n)
    log_own = np.array([logsumexp(log_kernel[i, labels == labels[i]]) - np.log(np.sum(labels == labels[i]))
                        for i in range(n)])
    return -log_all.mean() / np.log(2), (log_own - log_all).mean() / np.log(2)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 299, 300, 1000])
def test_matches_direct_logsumexp_formula_for_every_chunk_size(chunk_size):
    rng = np.random.default_rng(3)
    points = np.tanh(rng.normal(size=(300, 4)))
    points[10] = points[11]  # a duplicate pair
    labels = rng.integers(0, 4, 300)
    labels[123] = 4  # a class with one sample
    for var in (1e-3, 1e-1):
        b = bounds(points, labels, var, chunk_size=chunk_size)
        np.testing.assert_allclose(b["kde_upper"], direct_kde_bits(points, labels, var), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(b["kde_lower"], direct_kde_bits(points, labels, 4 * var), rtol=1e-11, atol=1e-12)


def test_kde_mi_bits_with_unrelated_variances_and_far_apart_clusters_matches_formula():
    from ibtui.estimators.kde import kde_mi_bits

    rng = np.random.default_rng(4)
    points = np.concatenate([rng.normal(size=(90, 2)) * 0.05, 3.0 + rng.normal(size=(60, 2)) * 0.05])
    labels = (rng.random(150) < 0.3).astype(np.int64)
    variances = (1e-4, 3e-3, 0.5, 4e-3)  # exponents far below the clamp, one 4x pair, one unrelated
    got = kde_mi_bits(torch.as_tensor(points), torch.as_tensor(labels), 2, variances, 16).numpy()
    expected = np.array([direct_kde_bits(points, labels, v) for v in variances])
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 64, 300])
def test_float32_precision_matches_direct_formula_within_1e_4_bits(chunk_size):
    rng = np.random.default_rng(5)
    points = np.tanh(2.0 * rng.normal(size=(300, 6)))  # tanh-like layer, partly saturated
    points[10] = points[11]
    labels = rng.integers(0, 3, 300)
    for var in (1e-3, 1e-1):
        b = bounds(points, labels, var, chunk_size=chunk_size, precision="float32")
        np.testing.assert_allclose(b["kde_upper"], direct_kde_bits(points, labels, var), rtol=0, atol=1e-4)
        np.testing.assert_allclose(b["kde_lower"], direct_kde_bits(points, labels, 4 * var), rtol=0, atol=1e-4)


def test_float32_precision_keeps_limiting_cases_exact():
    far = np.arange(6, dtype=np.float64)[:, None] * 10.0
    h_y = -(0.5 * math.log2(0.5)) * 2
    for plane, (ixt, ity) in bounds(far, [0, 1, 0, 1, 0, 1], 1e-3, precision="float32").items():
        assert ixt == pytest.approx(math.log2(6), abs=1e-9) and ity == pytest.approx(h_y, abs=1e-9)
    same = np.ones((5, 3))
    for ixt, ity in bounds(same, [0, 1, 0, 1, 1], 1e-3, precision="float32").values():
        assert ixt == pytest.approx(0.0, abs=1e-9) and ity == pytest.approx(0.0, abs=1e-9)


def test_kernel_workspace_is_reused_across_calls():
    from ibtui.estimators.kde import _workspace

    first = _workspace(1000, torch.float32, torch.device("cpu"))
    again = _workspace(500, torch.float32, torch.device("cpu"))
    assert again.data_ptr() == first.data_ptr()


def test_block_budget_shortens_chunks_without_changing_the_result(monkeypatch):
    import ibtui.estimators.kde as kde

    rng = np.random.default_rng(6)
    points = np.tanh(rng.normal(size=(300, 3)))
    labels = rng.integers(0, 2, 300)
    whole = bounds(points, labels, 1e-2)
    monkeypatch.setattr(kde, "BLOCK_BYTES", 2 * 300 * 8 * 7)  # 7 rows per chunk
    for plane, values in bounds(points, labels, 1e-2).items():
        np.testing.assert_allclose(values, whole[plane], rtol=1e-12)
