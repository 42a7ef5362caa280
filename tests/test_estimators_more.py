"""Adaptive binning, discrete, Gaussian and KSG estimators against analytic ground truth.

Tolerances of the sampling-based checks are a few standard deviations of the estimate at the
sample size used (the spread was measured over 12-30 seeds; see each comment); the data are
drawn from fixed seeds, so the tests are deterministic.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from scipy.special import digamma

from conftest import mi_samples
from ibtui.errors import UserError
from ibtui.estimators import ESTIMATORS, KSG, AdaptiveBinning, Binning, Discrete, Gaussian, MISet
from ibtui.estimators.adaptive import adaptive_codes


def make_mi_set(x_ids, y, x=None) -> MISet:
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    x = None if x is None else torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(len(y), -1))
    return MISet(torch.as_tensor(np.asarray(x_ids), dtype=torch.int64), y, int(y.max()) + 1, x=x)


def one_layer(est, layer, x_ids, y, x=None) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) of a single layer given as an array (N, d) or (N,)."""
    layer = torch.as_tensor(np.asarray(layer, dtype=np.float64).reshape(len(layer), -1))
    (ixt, ity), = est.estimate([layer], make_mi_set(x_ids, y, x)).values()
    return float(ixt[0]), float(ity[0])


def entropy_bits(probs) -> float:
    return -sum(p * math.log2(p) for p in probs if p > 0)


def correlated_pair(rho: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], n)
    return z[:, 0], z[:, 1]


# ---------------------------------------------------------------- adaptive binning

def test_adaptive_bins_of_a_1d_layer_of_distinct_values_hold_n_over_bins_samples_each():
    layer = torch.as_tensor(np.random.default_rng(0).normal(size=(1000, 1)))
    _, counts = torch.unique(adaptive_codes(layer, 30), return_counts=True)
    assert len(counts) == 30
    assert set(counts.tolist()) <= {1000 // 30, 1000 // 30 + 1}  # 33 or 34


def test_adaptive_ixt_is_log2_bins_for_distinct_values_when_bins_divide_n():
    layer = np.random.default_rng(1).standard_t(3, size=960)  # heavy tails: equal-width bins would not do this
    ixt, _ = one_layer(AdaptiveBinning(bins=30), layer, np.arange(960), np.zeros(960, dtype=int))
    assert ixt == pytest.approx(math.log2(30), abs=1e-12)


def test_adaptive_bins_split_unique_levels_not_samples_when_values_repeat():
    # 50 samples saturated at -1 plus 9 distinct levels: U = 10 unique values, 5 bins of 2 levels each.
    layer = np.concatenate([np.full(50, -1.0), np.linspace(-0.5, 0.9, 9)])
    ixt, _ = one_layer(AdaptiveBinning(bins=5), layer, np.arange(59), np.zeros(59, dtype=int))
    assert ixt == pytest.approx(entropy_bits([51 / 59] + [2 / 59] * 4), abs=1e-12)


def test_adaptive_plane_is_unchanged_by_a_strictly_increasing_map_of_the_activations():
    rng = np.random.default_rng(2)
    n = 600
    x_ids = rng.integers(0, 200, n)  # repeated inputs, so H(T|X) matters too
    y = rng.integers(0, 3, n)
    layer = torch.as_tensor(np.tanh(rng.normal(size=(200, 4))[x_ids] + 0.2 * rng.normal(size=(n, 4))))
    mapped = torch.exp(3.0 * layer) + layer  # strictly increasing, the same map for every unit
    assert torch.unique(mapped).numel() == torch.unique(layer).numel()  # still a bijection in float64
    est = AdaptiveBinning(bins=12)
    original = est.estimate([layer], make_mi_set(x_ids, y))[est.kind]
    transformed = est.estimate([mapped], make_mi_set(x_ids, y))[est.kind]
    np.testing.assert_array_equal(transformed[0], original[0])
    np.testing.assert_array_equal(transformed[1], original[1])


@pytest.mark.parametrize("est", [AdaptiveBinning(bins=4), AdaptiveBinning(), Discrete()], ids=lambda e: repr(e))
@settings(max_examples=30, deadline=None)
@given(sample=mi_samples())
def test_plug_in_mi_stays_within_zero_and_the_plug_in_entropies(est, sample):
    layer, x_ids, y = sample
    mi_set = make_mi_set(x_ids, y)
    ixt, ity = one_layer(est, layer, x_ids, y)
    assert 0.0 <= ixt <= mi_set.h_x + 1e-9
    assert 0.0 <= ity <= mi_set.h_y + 1e-9


# ---------------------------------------------------------------- discrete

def test_discrete_ixt_is_log2_k_for_a_k_valued_layer_with_equal_preimages():
    ids = np.arange(5 * 100)
    layer = np.stack([(ids % 5) * 0.25 - 0.5, np.full(len(ids), 0.1)], axis=1)  # 5 values, 100 inputs each
    ixt, _ = one_layer(Discrete(), layer, ids, np.zeros(len(ids), dtype=int))
    assert ixt == pytest.approx(math.log2(5), abs=1e-12)


def test_discrete_conditional_entropy_is_positive_when_a_repeated_input_gives_different_rows():
    # Input 0 is seen 4 times with T = a, a, b, c; input 1 four times with T = a, d, d, d.
    a, b, c, d = -0.75, 0.0, 0.5, 1.0
    layer = [a, a, b, c, a, d, d, d]
    h_t = entropy_bits([3 / 8, 1 / 8, 1 / 8, 3 / 8])
    h_t_given_x = 0.5 * entropy_bits([2 / 4, 1 / 4, 1 / 4]) + 0.5 * entropy_bits([1 / 4, 3 / 4])
    ixt, _ = one_layer(Discrete(), layer, [0, 0, 0, 0, 1, 1, 1, 1], np.zeros(8, dtype=int))
    assert h_t_given_x > 0
    assert ixt == pytest.approx(h_t - h_t_given_x, abs=1e-12)


def test_discrete_keeps_values_one_ulp_apart_distinct():
    layer = [1.0, np.nextafter(1.0, 2.0), 1.0, np.nextafter(1.0, 2.0)]
    ixt, _ = one_layer(Discrete(), layer, np.arange(4), np.zeros(4, dtype=int))
    assert ixt == pytest.approx(1.0, abs=1e-12)


def test_discrete_equals_binning_with_a_tiny_bin_size_on_quantized_activations():
    rng = np.random.default_rng(3)
    n = 800
    x_ids = rng.integers(0, 300, n)
    y = rng.integers(0, 2, n)
    # 3-bit quantized tanh units: levels k/4 on [-1, 1], 1/4 apart (far more than the 1e-3 bins).
    layers = [np.round(4 * np.tanh(rng.normal(size=(300, d))[x_ids] + 0.3 * rng.normal(size=(n, d)))) / 4
              for d in (3, 2, 1)]
    tensors = [torch.as_tensor(a) for a in layers]
    exact = Discrete().estimate(tensors, make_mi_set(x_ids, y))["discrete"]
    binned = Binning(bin_size=1e-3).estimate(tensors, make_mi_set(x_ids, y))["binning"]
    np.testing.assert_allclose(exact[0], binned[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(exact[1], binned[1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- Gaussian

def exactly_covariant_samples(cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n samples whose maximum-likelihood (1/n) covariance is exactly ``cov``."""
    z = np.random.default_rng(seed).normal(size=(n, len(cov)))
    z -= z.mean(axis=0)
    whitened = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T
    return whitened @ np.linalg.cholesky(cov).T + 0.3


def test_gaussian_ixt_is_half_log2_det_of_identity_plus_covariance_over_noise():
    cov = np.array([[1.0, 0.6, 0.2], [0.6, 2.0, -0.5], [0.2, -0.5, 0.5]])
    t = exactly_covariant_samples(cov, 50, seed=4)
    for var in (1e-3, 0.1, 10.0):
        expected = 0.5 * np.linalg.slogdet(np.eye(3) + cov / var)[1] / math.log(2)
        ixt, _ = one_layer(Gaussian(noise_variance=var), t, np.arange(50), np.zeros(50, dtype=int))
        assert ixt == pytest.approx(expected, rel=1e-10)


def test_gaussian_matches_the_population_closed_form_for_a_label_shifted_gaussian():
    sig2, n = 0.1, 20000
    cov = np.array([[1.0, 0.6, 0.2], [0.6, 2.0, -0.5], [0.2, -0.5, 0.5]])
    shift = np.array([1.0, -0.5, 0.8])
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, n)  # p(y=1) = 1/2
    t = rng.multivariate_normal(np.zeros(3), cov, n) + y[:, None] * shift
    # Population: Σ_T = Σ + p(1-p) δδᵀ, Σ_c = Σ.
    ixt_true = 0.5 * np.linalg.slogdet(np.eye(3) + (cov + 0.25 * np.outer(shift, shift)) / sig2)[1] / math.log(2)
    ity_true = 0.5 * math.log2(1 + 0.25 * shift @ np.linalg.solve(cov + sig2 * np.eye(3), shift))
    ixt, ity = one_layer(Gaussian(noise_variance=sig2), t, np.arange(n), y)
    # Sampling sd at N = 20000 (measured over 30 seeds): 0.010 bits for I(X;T), 0.005 for I(T;Y);
    # about ½·sqrt(2d/N)/ln 2 = 0.012 bits for one log-det. Tolerances are 5 sd.
    assert ixt == pytest.approx(ixt_true, abs=0.05)
    assert ity == pytest.approx(ity_true, abs=0.025)


def test_gaussian_ity_is_zero_when_both_classes_have_the_same_samples():
    t = np.random.default_rng(6).normal(size=(40, 3))
    ixt, ity = one_layer(Gaussian(), np.concatenate([t, t]), np.arange(80), np.repeat([0, 1], 40))
    assert ixt > 1.0
    assert ity == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- KSG / Ross

@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ksg_ixt_of_correlated_gaussians_is_minus_half_log2_one_minus_rho_squared(rho):
    x, t = correlated_pair(rho, 2000, seed=7)
    ixt, _ = one_layer(KSG(k=3), t, np.arange(2000), np.zeros(2000, dtype=int), x=x)
    # KSG sd at N = 2000, k = 3 (20 seeds): 0.024 bits (rho=0.5), 0.028 bits (rho=0.9); bias < 0.005.
    assert ixt == pytest.approx(-0.5 * math.log2(1 - rho**2), abs=0.1)


def test_ksg_gives_about_zero_for_independent_variables():
    rng = np.random.default_rng(8)
    t = rng.normal(size=(2000, 2))
    ixt, ity = one_layer(KSG(), t, np.arange(2000), rng.integers(0, 2, 2000), x=rng.normal(size=2000))
    # sd at N = 2000 (10-20 seeds): 0.022 bits for I(X;T), 0.015 bits for I(T;Y).
    assert ixt == pytest.approx(0.0, abs=0.1)
    assert ity == pytest.approx(0.0, abs=0.06)


def test_ksg_ity_of_well_separated_classes_is_h_y():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 2000)
    t = rng.normal(size=(2000, 2)) + 20.0 * y[:, None]  # no point has an other-class point nearer than its own
    _, ity = one_layer(KSG(), t, np.arange(2000), y, x=rng.normal(size=2000))
    p = y.mean()
    # Then m_i = k_i and the estimate is ψ(N) − ⟨ψ(N_c)⟩ = H(Y) + O(1/N) (here about 4e-4 bits).
    assert ity == pytest.approx(entropy_bits([p, 1 - p]), abs=0.005)


def test_ksg_ixt_on_repeated_input_ids_without_x_is_h_x_for_well_separated_inputs():
    rng = np.random.default_rng(10)
    x_ids = np.repeat(np.arange(8), 150)  # 8 inputs, each seen 150 times (noisy activations)
    t = 20.0 * x_ids[:, None] + rng.normal(size=(1200, 2))
    ixt, _ = one_layer(KSG(), t, x_ids, np.zeros(1200, dtype=int))
    expected = (digamma(1200) - digamma(150)) / math.log(2)  # Ross with m_i = k: H(X) = 3 bits + O(1/N)
    assert expected == pytest.approx(3.0, abs=0.01)
    assert ixt == pytest.approx(expected, abs=1e-9)


def test_ksg_ixt_without_x_and_without_repeated_inputs_is_undefined():
    ixt, ity = one_layer(KSG(), np.random.default_rng(11).normal(size=(50, 2)), np.arange(50), np.arange(50) % 2)
    assert math.isnan(ixt) and math.isfinite(ity)


def test_ksg_is_invariant_to_a_monotone_bijection_of_t_up_to_estimation_noise():
    x, t = correlated_pair(0.9, 2000, seed=12)
    y = np.zeros(2000, dtype=int)
    original, _ = one_layer(KSG(), t, np.arange(2000), y, x=x)
    mapped, _ = one_layer(KSG(), np.exp(t), np.arange(2000), y, x=x)
    # Over 12 seeds the change had sd 0.019 bits and never exceeded 0.042 bits at N = 2000.
    assert mapped == pytest.approx(original, abs=0.1)


def test_ksg_chunked_and_unchunked_paths_agree():
    rng = np.random.default_rng(13)
    n = 300
    x_ids = rng.integers(0, 40, n)
    y = rng.integers(0, 3, n)
    layers = [torch.as_tensor(np.tanh(rng.normal(size=(n, d)))) for d in (1, 3)]
    for x in (rng.normal(size=(n, 2)), None):  # the x path and the id path; 64 rows: 5 chunks, last one short
        chunked = KSG(chunk_size=64).estimate(layers, make_mi_set(x_ids, y, x))["ksg"]
        whole = KSG(chunk_size=4096).estimate(layers, make_mi_set(x_ids, y, x))["ksg"]
        np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-12)
        np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-12)


# ---------------------------------------------------------------- interface

NEW = [AdaptiveBinning(), Discrete(), Gaussian(), KSG()]


@pytest.mark.parametrize("est", NEW, ids=lambda e: e.kind)
def test_new_estimators_are_registered_and_return_one_float64_value_per_layer(est):
    assert ESTIMATORS[est.kind] is type(est) and est.summary
    rng = np.random.default_rng(14)
    layers = [torch.rand(40, 3), torch.rand(40, 2, dtype=torch.float64), torch.rand(40, 1)]
    planes = est.estimate(layers, make_mi_set(np.arange(40), np.arange(40) % 2, rng.normal(size=(40, 4))))
    assert tuple(planes) == est.planes == (est.kind,)
    for values in planes[est.kind]:
        assert values.dtype == np.float64 and values.shape == (3,) and np.isfinite(values).all()


@pytest.mark.parametrize("est", NEW, ids=lambda e: e.kind)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_activations_raise(est, bad):
    layer = torch.zeros(8, 2, dtype=torch.float64)
    layer[2, 1] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        est.estimate([layer], make_mi_set(np.arange(8), np.arange(8) % 2))


@pytest.mark.parametrize("est, fragment", [
    (lambda: AdaptiveBinning(bins=1), "bins must be >= 2"),
    (lambda: Gaussian(noise_variance=0.0), "noise_variance"),
    (lambda: Gaussian(noise_variance=-1.0), "noise_variance"),
    (lambda: Gaussian(noise_variance=math.nan), "noise_variance"),
    (lambda: Gaussian(noise_variance=math.inf), "noise_variance"),
    (lambda: KSG(k=0), "k must be >= 1"),
    (lambda: KSG(noise=-1e-10), "noise"),
    (lambda: KSG(noise=math.nan), "noise"),
    (lambda: KSG(chunk_size=0), "chunk_size"),
])
def test_validate_rejects_impossible_parameters_in_one_line(est, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        est().validate()  # construction validates
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("est", [*NEW, KSG(noise=0.0, k=1), AdaptiveBinning(bins=2)], ids=lambda e: repr(e))
def test_validate_accepts_defaults_and_sensible_parameters(est):
    est.validate()
