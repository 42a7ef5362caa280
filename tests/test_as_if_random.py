"""As if random: activations pooled over measured epochs or ensemble members, so H(T|X) > 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibtui.config import load_preset
from ibtui.engine.data import load_dataset
from ibtui.engine.model import Ensemble
from ibtui.engine.runner import execute
from ibtui.engine.store import PLANES, checkpoint_path, read_events, read_npz
from ibtui.errors import UserError
from ibtui.estimators import MISet
from ibtui.estimators.binning import Binning

from conftest import full_and_resumed_events, tiny_config

DATA = load_dataset("12bit")


def layers_at(run_dir, epoch, seeds=(0,)):
    weights = np.load(checkpoint_path(run_dir, epoch), allow_pickle=False)
    model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh", "idnns", list(seeds))
    model.load_state_arrays({k: torch.as_tensor(weights[k]) for k in weights.files if not k.startswith("resume.")})
    with torch.no_grad():
        return model.forward_layers(torch.as_tensor(DATA.x))  # (S, N, d) per layer


def test_window_of_one_epoch_equals_the_deterministic_estimate(runs_dir):
    summary = execute(tiny_config(runs_dir, as_if_random={"pool": "epochs", "window": 1}))
    for event in read_events(summary["run_dir"]):
        assert event["planes"]["binning~epochs1"] == event["planes"]["binning"]


def test_epoch_pool_equals_binning_of_the_stacked_activations(runs_dir):
    summary = execute(tiny_config(runs_dir, as_if_random={"pool": "epochs", "window": 2}))
    run = summary["run_dir"]
    epochs = [e["epoch"] for e in read_events(run)]
    stacked = [torch.cat([a[0], b[0]]) for a, b in zip(layers_at(run, epochs[-2]), layers_at(run, epochs[-1]))]
    ixt, ity = Binning(0.07).estimate(stacked, MISet.from_arrays(DATA.x, DATA.y).pooled(2))["binning"]
    pooled = read_events(run)[-1]["planes"]["binning~epochs2"]
    np.testing.assert_allclose(pooled["ixt"], ixt)
    np.testing.assert_allclose(pooled["ity"], ity)
    # H(T|X) > 0 is estimated: with every stacked row its own input (ids 0..2N-1) binning gives H(T);
    # the pooled I(X;T) = H(T) − H(T|X) is below it wherever an input's two epochs fall in different bins
    h_t = Binning(0.07).estimate(stacked, MISet(torch.arange(2 * len(DATA.y)), torch.as_tensor(DATA.y).repeat(2),
                                                2))["binning"][0]
    assert (np.asarray(pooled["ixt"]) <= h_t + 1e-9).all() and (np.asarray(pooled["ixt"]) < h_t - 1e-6).any()


def test_seed_pool_equals_binning_of_all_members_stacked(runs_dir):
    summary = execute(tiny_config(runs_dir, train={"seeds": 3}, as_if_random={"pool": "seeds"}))
    run = summary["run_dir"]
    layers = layers_at(run, 12, seeds=(0, 1, 2))
    stacked = [layer.reshape(-1, layer.shape[-1]) for layer in layers]
    ixt, ity = Binning(0.07).estimate(stacked, MISet.from_arrays(DATA.x, DATA.y).pooled(3))["binning"]
    pooled = read_events(run)[-1]["planes"]["binning~seeds"]
    np.testing.assert_allclose(pooled["ixt"], ixt)
    np.testing.assert_allclose(pooled["ity"], ity)
    assert "ixt_seeds" not in pooled  # one pooled plane, not one per member
    assert "binning~seeds.ixt" in read_npz(run + "/" + PLANES)


def test_pooling_identical_members_adds_no_conditional_entropy():
    """Two identical copies of a network: H(T|X) = 0, so pooling changes nothing."""
    layers = [torch.randn(64, 3)]
    mi_set = MISet(torch.arange(64), torch.arange(64) % 2, 2)
    once = Binning(0.5).estimate(layers, mi_set)["binning"]
    twice = Binning(0.5).estimate([torch.cat([layers[0], layers[0]])], mi_set.pooled(2))["binning"]
    np.testing.assert_allclose(once[0], twice[0])
    np.testing.assert_allclose(once[1], twice[1])


def test_resumed_epoch_pool_matches_an_uninterrupted_run(runs_dir):
    a, b = full_and_resumed_events(runs_dir, 8, as_if_random={"pool": "epochs", "window": 3})
    assert [e["planes"]["binning~epochs3"] for e in a] == [e["planes"]["binning~epochs3"] for e in b]


@pytest.mark.parametrize("sections, message", [
    ({"as_if_random": {"pool": "seeds"}}, "ensemble"),
    ({"as_if_random": {"pool": "weights"}}, "as_if_random.pool"),
    ({"as_if_random": {"pool": "epochs", "window": 0}}, "window"),
    ({"as_if_random": {"pool": "epochs"}, "estimators": {"kde": {}}}, "repeated inputs"),
    ({"as_if_random": {"pool": "epochs"}, "schedule": {"kind": "delta_exact"}}, "delta_exact"),
])
def test_impossible_pooling_settings_are_refused(runs_dir, sections, message):
    with pytest.raises(UserError, match=message):
        tiny_config(runs_dir, **sections)


def test_as_if_random_preset_pools_over_an_ensemble():
    cfg = load_preset("as-if-random")
    assert cfg.as_if_random.pool == "seeds" and cfg.train.seeds >= 2
