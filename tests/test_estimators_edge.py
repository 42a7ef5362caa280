"""EDGE (Noshad et al. 2019) against its reference formula and ground-truth Gaussian cases."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ibtui.estimators import ESTIMATORS, EDGE, MISet
from ibtui.estimators.edge import bucket_ids, edge_weights_mi_bits


def mixture_truth_bits(mu=1.0):
    """I(T;Y) in bits, Y ∈ {0, 1} equiprobable, T | Y ~ N(±mu, 1): H(Y) − E H(Y|T) by quadrature."""
    def density_times_conditional_entropy(t):
        plus, minus = math.exp(-(t - mu) ** 2 / 2), math.exp(-(t + mu) ** 2 / 2)
        q = plus / (plus + minus)
        h = 0.0 if q in (0.0, 1.0) else -(q * math.log2(q) + (1 - q) * math.log2(1 - q))
        return 0.5 * (plus + minus) / math.sqrt(2 * math.pi) * h
    return 1.0 - integrate.quad(density_times_conditional_entropy, -12, 12)[0]


def mixture(n, d, seed):
    rng = np.random.default_rng([n, d, seed])
    y = rng.integers(0, 2, n)
    t = rng.standard_normal((n, d))
    t[:, 0] += np.where(y == 1, 1.0, -1.0)
    return torch.as_tensor(t), MISet(torch.arange(n), torch.as_tensor(y), 2)


def test_the_edge_weights_follow_the_reference_formula():
    a = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    b = torch.tensor([0, 0, 1, 1, 1, 0, 2, 2])
    n, expected = len(a), 0.0
    for i, j in set(zip(a.tolist(), b.tolist())):  # the reference's loop over the graph's edges
        n_ij = sum(1 for p, q in zip(a.tolist(), b.tolist()) if (p, q) == (i, j))
        n_i, m_j = a.tolist().count(i), b.tolist().count(j)
        expected += n_ij * max(min(math.log(n_ij * n / (n_i * m_j), 2), 10.0), 0.001)
    assert edge_weights_mi_bits(a, b, 10.0) == pytest.approx(expected / n, abs=1e-12)


def test_bucket_ids_number_the_distinct_rows():
    codes = torch.tensor([[3, -1], [0, 5], [3, -1], [0, 4], [2 ** 40, 0]])
    ids = bucket_ids(codes)
    assert ids[0] == ids[2] and len(set(ids.tolist())) == 4
    wide = torch.tensor([[2 ** 40, -2 ** 40, 2 ** 40], [0, 0, 0], [2 ** 40, -2 ** 40, 2 ** 40]])  # rows path
    wide_ids = bucket_ids(wide)
    assert wide_ids[0] == wide_ids[2] != wide_ids[1]


@pytest.mark.parametrize("d", [1, 2])
def test_low_dimensional_gaussian_mixture_within_its_stated_bias(d):
    # Truth 0.486 bits. EDGE's floor on the pointwise terms biases it upward (module docstring):
    # measured +0.10 to +0.15 bits at N = 4096 over seeds; the bucket grid loses a little. So the
    # estimate must lie above truth − 0.05 and below truth + 0.2.
    truth = mixture_truth_bits()
    layer, mi_set = mixture(4096, d, seed=0)
    _, (ity,) = EDGE().estimate([layer], mi_set)["edge"]
    assert truth - 0.05 <= ity <= truth + 0.2


def test_a_layer_independent_of_the_labels_gets_at_most_the_floor_bias():
    # T independent of Y: the plug-in MI of the buckets is ~ (B−1)/(2N ln 2); the floor adds the
    # weight of the negative terms, about half the pairs: a small positive value, far below H(Y).
    rng = np.random.default_rng(5)
    layer = torch.as_tensor(rng.standard_normal((4096, 2)))
    mi_set = MISet(torch.arange(4096), torch.as_tensor(rng.integers(0, 2, 4096)), 2)
    _, (ity,) = EDGE().estimate([layer], mi_set)["edge"]
    assert 0.0 <= ity <= 0.05


def test_distinct_inputs_give_the_entropy_of_the_buckets_capped_at_upper():
    layer, mi_set = mixture(2048, 12, seed=1)
    (ixt,), _ = EDGE(upper=10.0).estimate([layer], mi_set)["edge"]
    assert 0.0 < ixt <= 10.0
    (ixt_low_cap,), _ = EDGE(upper=2.0).estimate([layer], mi_set)["edge"]
    assert ixt_low_cap <= 2.0


def test_identical_inputs_share_a_bucket_and_add_nothing():
    layer, mi_set = mixture(1024, 3, seed=2)
    doubled = MISet(mi_set.x_ids.repeat(2), mi_set.y.repeat(2), 2)
    (ixt,), (ity,) = EDGE().estimate([layer.repeat(2, 1)], doubled)["edge"]
    assert ixt <= math.log2(1024) + 0.001 and ity <= 1.001


def test_deterministic_and_independent_of_sample_order():
    layer, mi_set = mixture(2048, 8, seed=3)
    order = torch.randperm(2048, generator=torch.Generator().manual_seed(0))
    first = EDGE().estimate([layer], mi_set)["edge"]
    again = EDGE().estimate([layer], mi_set)["edge"]
    assert first[0][0] == again[0][0] and first[1][0] == again[1][0]
    shuffled = EDGE().estimate([layer[order]], MISet(mi_set.x_ids[order], mi_set.y[order], 2))["edge"]
    # the K-NN widths come from sampled points, so the order moves the widths a little
    assert shuffled[1][0] == pytest.approx(first[1][0], abs=0.05)


@pytest.mark.parametrize("params", [{"ensemble": 0}, {"gamma": 0.0}, {"gamma": float("nan")}, {"upper": -1.0},
                                    {"normalize_epsilon": "yes"}, {"seed": -1}])
def test_impossible_parameters_are_refused(params):
    with pytest.raises(ValueError, match="estimators.edge"):
        EDGE(**params)


def test_it_is_registered():
    assert ESTIMATORS["edge"] is EDGE
