"""The matrix-based Rényi α-entropy estimator against closed forms and its invariances."""

import math

import numpy as np
import pytest
import torch

from ibtui.estimators import ESTIMATORS, MatrixRenyi, MISet
from ibtui.estimators.renyi import normalised, renyi_entropy_bits, same_id_gram


def renyi_of_proportions(counts, alpha):
    """The Rényi α-entropy in bits of a discrete distribution given by counts (Shannon at α = 1)."""
    p = np.asarray(counts, dtype=float) / np.sum(counts)
    if alpha == 1.0:
        return float(-(p * np.log2(p)).sum())
    return float(np.log2((p ** alpha).sum()) / (1.0 - alpha))


def mi_set_of_ids(x_ids, y):
    return MISet(torch.as_tensor(x_ids), torch.as_tensor(y), n_classes=int(max(y)) + 1)


def clusters(ids, dim=3, spread=100.0, seed=0):
    """Points far apart (distance ≳ spread) per distinct id: under a small kernel width, a delta kernel."""
    centres = torch.randn(int(max(ids)) + 1, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return centres[torch.as_tensor(ids)] * spread


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 2.0, 3.0])
def test_label_entropy_is_the_renyi_entropy_of_the_class_proportions(alpha):
    y = torch.tensor([0] * 5 + [1] * 2 + [2] * 1)
    a_y = normalised(same_id_gram(y, torch.float64))
    assert renyi_entropy_bits(a_y, alpha) == pytest.approx(renyi_of_proportions([5, 2, 1], alpha), abs=1e-9)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_a_layer_that_copies_a_discrete_input_has_the_input_entropy(alpha):
    x_ids = [0, 1, 2, 2, 3, 3, 3, 3]
    y = [0, 0, 1, 1, 0, 0, 1, 1]
    layer = clusters(x_ids)
    (ixt,), _ = MatrixRenyi(alpha=alpha, width=1e-3).estimate([layer], mi_set_of_ids(x_ids, y))["renyi"]
    assert ixt == pytest.approx(renyi_of_proportions([1, 1, 2, 4], alpha), abs=1e-9)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_a_layer_independent_of_the_input_and_the_labels_carries_nothing(alpha):
    # every (input, layer value) pair once: the joint Gram matrix is the Kronecker product
    x_ids = [x for x in range(4) for _ in range(3)]
    t_ids = [t for _ in range(4) for t in range(3)]
    y = [x % 2 for x in x_ids]
    ixt, ity = MatrixRenyi(alpha=alpha, width=1e-3).estimate([clusters(t_ids)], mi_set_of_ids(x_ids, y))["renyi"]
    assert ixt[0] == pytest.approx(0.0, abs=1e-9)
    assert ity[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 1.01, 2.0])
def test_two_samples_by_hand(alpha):
    # T = 0 and 1 with σ = 1: K = [[1, k], [k, 1]], k = e^(−1/2); A = K/2 has eigenvalues (1 ± k)/2.
    # The inputs (and labels) differ: A_X = I/2, A_X ∘ A_T = I/4, whose entropy is 1 bit, as S(A_X):
    # so I(X;T) = S(A_T) = log2(((1+k)/2)^α + ((1−k)/2)^α) / (1−α); likewise I(T;Y).
    k = math.exp(-0.5)
    expected = math.log2(((1 + k) / 2) ** alpha + ((1 - k) / 2) ** alpha) / (1 - alpha)
    layer = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    ixt, ity = MatrixRenyi(alpha=alpha, width=1.0).estimate([layer], mi_set_of_ids([0, 1], [0, 1]))["renyi"]
    assert ixt[0] == pytest.approx(expected, abs=1e-12)
    assert ity[0] == pytest.approx(expected, abs=1e-12)


def test_alpha_two_from_the_frobenius_norm_equals_the_eigenvalues():
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = MatrixRenyi(width=1.0).gram(z)
    eigenvalues = np.linalg.eigvalsh(a.numpy())
    assert renyi_entropy_bits(a, 2.0) == pytest.approx(-math.log2((eigenvalues ** 2).sum()), abs=1e-10)


def random_case(n=120, d=5, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    layer = torch.tanh(x @ torch.randn(3, d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, d, generator=g,
                                                                                                   dtype=torch.float64))
    y = (x[:, 0] > 0).long()
    mi_set = MISet(torch.arange(n), y, 2, x.float())
    return layer, mi_set


@pytest.mark.parametrize("width", ["silverman", "median"])
def test_invariant_to_sample_order_rotation_translation_and_scale(width):
    layer, mi_set = random_case()
    estimator = MatrixRenyi(width=width)
    ixt, ity = estimator.estimate([layer], mi_set)["renyi"]
    order = torch.randperm(layer.shape[0], generator=torch.Generator().manual_seed(3))
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    moved = (layer @ rotation + 7.0) * 13.0
    permuted = MISet(mi_set.x_ids[order], mi_set.y[order], 2, mi_set.x[order])
    ixt2, ity2 = estimator.estimate([moved[order]], permuted)["renyi"]
    np.testing.assert_allclose(ixt2, ixt, atol=1e-6)
    np.testing.assert_allclose(ity2, ity, atol=1e-6)


def test_values_lie_within_their_exact_bounds():
    layer, mi_set = random_case(n=200, d=8)
    estimator = MatrixRenyi(alpha=1.01, width="median")
    ixt, ity = estimator.estimate([layer, layer[:, :2]], mi_set)["renyi"]
    label_entropy = renyi_of_proportions(np.bincount(mi_set.y.numpy()), 1.01)
    assert np.all(ixt >= 0) and np.all(ixt <= math.log2(200) + 1e-9)
    assert np.all(ity >= 0) and np.all(ity <= label_entropy + 1e-9)
    assert ity[0] > 0.05  # the layer does carry label information (y is the sign of a unit's input)


def test_float32_is_close_to_float64():
    layer, mi_set = random_case()
    a = MatrixRenyi(width="median").estimate([layer], mi_set)["renyi"]
    b = MatrixRenyi(width="median", precision="float32").estimate([layer], mi_set)["renyi"]
    np.testing.assert_allclose(b[0], a[0], atol=1e-3)
    np.testing.assert_allclose(b[1], a[1], atol=1e-3)


def test_chunked_gram_equals_one_chunk():
    layer, mi_set = random_case()
    a = MatrixRenyi(chunk_size=7).estimate([layer], mi_set)["renyi"]
    b = MatrixRenyi(chunk_size=4096).estimate([layer], mi_set)["renyi"]
    np.testing.assert_allclose(a[0], b[0], atol=1e-10)


@pytest.mark.parametrize("params", [{"alpha": 0}, {"alpha": -1}, {"alpha": float("nan")}, {"width": "wide"},
                                    {"width": 0.0}, {"width": float("inf")}, {"precision": "float16"},
                                    {"chunk_size": 0}])
def test_impossible_parameters_are_refused(params):
    with pytest.raises(ValueError, match="estimators.renyi"):
        MatrixRenyi(**params)


def test_it_is_registered():
    assert ESTIMATORS["renyi"] is MatrixRenyi


@pytest.mark.parametrize("alpha", [0.7, 1.01])
def test_the_exact_shortcuts_equal_the_eigenvalues(alpha):
    from ibtui.estimators.renyi import ids_entropy_bits, spectrum_entropy_bits

    ids = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    full = normalised(same_id_gram(ids, torch.float64))
    assert ids_entropy_bits(ids, alpha) == pytest.approx(
        spectrum_entropy_bits(torch.as_tensor(np.linalg.eigvalsh(full.numpy())), alpha), abs=1e-10)
    diagonal = torch.diag(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    assert renyi_entropy_bits(diagonal, alpha) == pytest.approx(renyi_of_proportions([1, 2, 3, 4], alpha), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.7, 1.01, 3.0])
def test_the_block_spectrum_of_a_delta_kernel_product_equals_the_full_product(alpha):
    from ibtui.estimators.renyi import joint_entropy_bits, joint_with_ids_entropy_bits

    layer, _ = random_case(n=60)
    a_t = MatrixRenyi(width=1.0).gram(layer)
    ids = torch.tensor([i % 7 for i in range(50)] + list(range(100, 110)))  # groups of 7 or 8, and singletons
    a_ids = normalised(same_id_gram(ids, torch.float64))
    assert joint_with_ids_entropy_bits(a_t, ids, alpha) == pytest.approx(joint_entropy_bits(a_t, a_ids, alpha),
                                                                         abs=1e-9)
