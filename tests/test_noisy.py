"""Noisy networks (Goldfeld et al. 2019) and their Monte-Carlo mixture estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import logsumexp

from ibtui.config import load_preset
from ibtui.engine.data import load_dataset
from ibtui.engine.model import Ensemble
from ibtui.engine.runner import execute
from ibtui.rundir.store import checkpoint_path, read_events
from ibtui.errors import UserError
from ibtui.estimators import Binning, MISet, NoisyMixture
from ibtui.estimators.noisy import conditional_entropy_nats, mixture_entropy_nats

from conftest import full_and_resumed_events, tiny_config

NOISY = {"model": {"widths": [10, 7, 5, 4, 3], "activation": "tanh", "noise_std": 0.1},
         "estimators": {"noisy_mc": {"noise_std": 0.1, "draws": 4}, "binning": {"bin_size": 0.07}}}


def quadrature_mixture_entropy(centres: np.ndarray, sigma: float) -> float:
    """h of (1/K) Σ N(c_k, σ²) in 1-D by adaptive quadrature (nats)."""
    def integrand(t: float) -> float:
        log_p = logsumexp(-0.5 * ((t - centres) / sigma) ** 2) - math.log(len(centres)) - 0.5 * math.log(2 * math.pi * sigma ** 2)
        return -math.exp(log_p) * log_p

    points = sorted(centres)
    return sum(integrate.quad(integrand, a, b, limit=200)[0]
               for a, b in zip([-np.inf, *points], [*points, np.inf]))


def test_mixture_entropy_matches_quadrature_in_1d():
    centres = np.random.default_rng(0).uniform(-1, 1, 40)
    g = torch.Generator().manual_seed(1)
    estimate = mixture_entropy_nats(torch.as_tensor(centres)[:, None], 0.1, 200, g)
    # 8000 draws; std of −log p is about 1 nat here → standard error ≈ 0.011; 0.05 is > 4 SE
    assert estimate == pytest.approx(quadrature_mixture_entropy(centres, 0.1), abs=0.05)


def test_conditional_entropy_of_coinciding_draws_is_the_gaussians_exactly():
    draws = torch.randn(1, 50, 3).repeat(6, 1, 1)
    g = torch.Generator().manual_seed(0)
    assert conditional_entropy_nats(draws, 0.2, 3, g) == pytest.approx(1.5 * math.log(2 * math.pi * math.e * 0.04))


def test_conditional_entropy_of_two_far_draws_adds_one_bit():
    draws = torch.zeros(2, 500, 1)
    draws[1] += 50.0
    g = torch.Generator().manual_seed(0)
    expected = math.log(2) + 0.5 * math.log(2 * math.pi * math.e)
    assert conditional_entropy_nats(draws, 1.0, 4, g) == pytest.approx(expected, abs=0.05)


def test_first_layer_ixt_matches_quadrature():
    """Deterministic centres (no noise upstream): I(X;T) = h(mixture) − h(Gaussian), 1-D."""
    centres = np.linspace(-1, 1, 64)
    estimator = NoisyMixture(noise_std=0.05, draws=3, mc=50)
    (ixt,), (ity,) = estimator.estimate([torch.as_tensor(centres)[:, None]],
                                        MISet(torch.arange(64), torch.arange(64) % 2, 2))["noisy_mc"]
    truth = (quadrature_mixture_entropy(centres, 0.05) - 0.5 * math.log(2 * math.pi * math.e * 0.05 ** 2)) / math.log(2)
    assert ixt == pytest.approx(truth, abs=0.05)
    assert 0 <= ity <= 1.0 + 0.05


def test_noisy_network_is_random_in_evaluation_and_plain_without_noise():
    x = torch.randn(5, 12)
    noisy = Ensemble(12, [10, 5], 2, "tanh", "idnns", [0], noise_std=0.1)
    with torch.no_grad():
        assert not torch.equal(noisy(x), noisy(x))
    plain = Ensemble(12, [10, 5], 2, "tanh", "idnns", [0])
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x))


def test_centres_are_the_activations_before_the_noise():
    model = Ensemble(12, [10, 5], 2, "tanh", "idnns", [0], noise_std=0.3)
    with torch.no_grad():
        first = model.forward_layers(torch.randn(7, 12), centres=True)[0]
    assert float(first.abs().max()) <= 1.0  # tanh values: no noise added yet


def test_noisy_run_first_layer_equals_the_estimate_on_its_checkpoint(runs_dir):
    summary = execute(tiny_config(runs_dir, **NOISY))
    run = summary["run_dir"]
    weights = np.load(checkpoint_path(run, 12), allow_pickle=False)
    model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh", "idnns", [0], noise_std=0.1)
    model.load_state_arrays({k: torch.as_tensor(weights[k]) for k in weights.files if not k.startswith("resume.")})
    data = load_dataset("12bit")
    with torch.no_grad():
        first = model.forward_layers(torch.as_tensor(data.x), centres=True)[0][0]
    (ixt,), (ity,) = NoisyMixture(noise_std=0.1, draws=4).estimate(
        [first.expand(4, *first.shape)], MISet.from_arrays(data.x, data.y))["noisy_mc"]
    plane = read_events(run)[-1]["planes"]["noisy_mc"]
    assert plane["ixt"][0] == pytest.approx(ixt, rel=1e-9) and plane["ity"][0] == pytest.approx(ity, rel=1e-9)
    assert all(-0.1 <= v <= 12.1 for v in plane["ixt"]) and all(-0.1 <= v <= 1.1 for v in plane["ity"])


def test_resumed_noisy_run_matches_an_uninterrupted_one(runs_dir):
    a, b = full_and_resumed_events(runs_dir, 7, **NOISY)
    assert [e["planes"] for e in a] == [e["planes"] for e in b]


@pytest.mark.parametrize("model, message", [({"noise_std": 0.0}, "model.noise_std > 0"),
                                            ({"noise_std": 0.2}, "must equal model.noise_std"),
                                            ({"noise_std": -1.0}, "model.noise_std must be")])
def test_noisy_settings_are_checked(runs_dir, model, message):
    with pytest.raises(UserError, match=message):
        tiny_config(runs_dir, model=model, estimators={"noisy_mc": {"noise_std": 0.1}})


def test_noisy_tanh_preset_measures_the_mixture():
    cfg = load_preset("noisy-tanh")
    assert cfg.model.noise_std == 0.1 and cfg.estimators["noisy_mc"].noise_std == 0.1


def test_label_information_never_exceeds_h_y_even_with_monte_carlo_noise():
    """Common draws for h(T) and h(T|Y): I(T;Y) = H(Y) + mean log p̂(y|T) ≤ H(Y) for every draw."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(2000, 10, generator=g) * 0.5
    labels = (centres[:, 0] > 0.3).long()  # unbalanced classes, nearly separable at this σ
    mi_set = MISet(torch.arange(2000), labels, 2)
    p = labels.float().mean().item()
    h_y = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    for seed in range(3):
        (_,), (ity,) = NoisyMixture(noise_std=0.05, draws=1, seed=seed).estimate([centres], mi_set)["noisy_mc"]
        assert ity <= h_y + 1e-6 and ity > h_y - 0.05  # 1e-6: float64 rounding of the two sums


def test_binning_of_a_noisy_network_pools_noisy_passes_and_estimates_h_t_given_x(runs_dir):
    run = execute(tiny_config(runs_dir, **NOISY))["run_dir"]
    from ibtui.engine.measure import measurement_generator

    weights = np.load(checkpoint_path(run, 12), allow_pickle=False)
    model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh", "idnns", [0], noise_std=0.1)
    model.load_state_arrays({k: torch.as_tensor(weights[k]) for k in weights.files if not k.startswith("resume.")})
    data = load_dataset("12bit")
    generator = measurement_generator(0, 12)
    with torch.no_grad():  # 8 passes (noise_draws; noisy_mc's 4 draws are the first 4 of them)
        passes = [model.forward_both(torch.as_tensor(data.x), slice(0, 1), generator)[1] for _ in range(8)]
    stacked = [torch.cat([p[i][0] for p in passes]) for i in range(6)]
    expected = Binning(0.07).estimate_pooled(stacked, MISet.from_arrays(data.x, data.y).pooled(8))["binning"]
    plane = read_events(run)[-1]["planes"]["binning"]
    np.testing.assert_allclose(plane["ixt"], expected.ixt, atol=1e-9)
    np.testing.assert_allclose(plane["h_t_x"], expected.h_t_x, atol=1e-9)
    assert plane["h_t_x_cap"] == pytest.approx(3.0)  # log2 of 8 passes
    assert min(plane["h_t_x"][:5]) > 0.5  # the noise makes T|X random: H(T|X) is not forced to 0
    assert plane["saturated"][0] is True  # 10 noisy units binned at 0.07: every pass its own row


def test_measuring_a_noisy_network_leaves_its_training_unchanged(runs_dir):
    often = execute(tiny_config(runs_dir / "a", schedule={"kind": "every"}, **NOISY))
    rarely = execute(tiny_config(runs_dir / "b", schedule={"kind": "every_n", "every": 6}, **NOISY))
    a, b = (np.load(checkpoint_path(r["run_dir"], 12), allow_pickle=False) for r in (often, rarely))
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith("weight."))
    assert read_events(often["run_dir"])[-1]["planes"] == read_events(rarely["run_dir"])[-1]["planes"]


@pytest.mark.parametrize("estimator", ["kde", "ksg", "gaussian", "infonce"])
def test_estimators_of_deterministic_layers_are_refused_on_a_noisy_network(runs_dir, estimator):
    with pytest.raises(UserError, match="deterministic layer"):
        tiny_config(runs_dir, model={"noise_std": 0.1}, estimators={estimator: {}})
