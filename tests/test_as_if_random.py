"""As if random through SGD's own randomness: children branched from the network at each measured
epoch, trained `window` epochs with their own batch orders, pooled per input (H(T|X) > 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ibtui.config import load_preset
from ibtui.engine.data import load_dataset
from ibtui.engine.model import Ensemble
from ibtui.engine.loop import branch_seed
from ibtui.engine.runner import execute
from ibtui.rundir.store import PLANES, checkpoint_path, read_events, read_npz
from ibtui.engine.training import Trainer
from ibtui.errors import UserError
from ibtui.estimators import MISet
from ibtui.estimators.binning import Binning

from conftest import full_and_resumed_events, tiny_config

DATA = load_dataset("12bit")
AS_IF = {"as_if_random": {"pool": "sgd", "children": 4, "window": 2}, "train": {"epochs": 6},
         "schedule": {"kind": "every_n", "every": 3}}


def test_children_pooled_plane_is_binning_of_k_networks_trained_on_from_the_checkpoint(runs_dir):
    """The definition, rebuilt in the test: K single networks, each from the checkpoint's weights and
    optimiser state, trained `window` epochs with batch seed branch_seed(seed, epoch, k), stacked."""
    cfg = tiny_config(runs_dir, **AS_IF)
    run = execute(cfg)["run_dir"]
    epoch, children, window = 3, 4, 2
    saved = read_npz(checkpoint_path(run, epoch))
    from ibtui.engine.runner import prepare

    prep = prepare(cfg)
    layers = []
    for k in range(children):
        model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh", "idnns", [0])
        model.load_state_arrays({key: torch.as_tensor(v) for key, v in saved.items() if not key.startswith("resume.")})
        trainer = Trainer(model, prep.x_all, prep.y_all, prep.train_idx, cfg.train, [branch_seed(0, epoch, k)])
        state = {key: v for key, v in saved.items() if key.startswith("resume.opt.")}
        trainer.load_state_arrays({**state, "resume.rng": np.stack([trainer.batch_gens[0].get_state().numpy()])})
        for step in range(window):
            trainer.epoch(epoch + step + 1)
        model.eval()
        with torch.no_grad():
            layers.append(model.forward_layers(torch.as_tensor(DATA.x))[:])
    stacked = [torch.cat([child[i][0] for child in layers]) for i in range(6)]
    expected = Binning(0.07).estimate_pooled(stacked, MISet.from_arrays(DATA.x, DATA.y).pooled(children))["binning"]
    got = next(e for e in read_events(run) if e["epoch"] == epoch)["planes"]["binning~sgd"]
    np.testing.assert_allclose(got["ixt"], expected.ixt, atol=1e-6)
    np.testing.assert_allclose(got["ity"], expected.ity, atol=1e-6)
    np.testing.assert_allclose(got["h_t_x"], expected.h_t_x, atol=1e-6)
    assert got["h_t_x_cap"] == pytest.approx(math.log2(children))


def test_children_diverge_so_the_conditional_entropy_is_positive(runs_dir):
    run = execute(tiny_config(runs_dir, **AS_IF))["run_dir"]
    last = read_events(run)[-1]["planes"]["binning~sgd"]
    assert max(last["h_t_x"]) > 0.1
    assert all(0 <= h <= 2 + 1e-9 for h in last["h_t_x"])  # cap log2 4 = 2 bits


def test_a_conditional_entropy_at_its_cap_is_flagged_saturated(runs_dir):
    run = execute(tiny_config(runs_dir, estimators={"binning": {"bin_size": 1e-7}}, **AS_IF))["run_dir"]
    plane = read_events(run)[-1]["planes"]["binning~sgd"]
    assert plane["h_t_x"][0] == pytest.approx(2.0) and plane["saturated"][0] is True
    arrays = read_npz(f"{run}/{PLANES}")
    assert arrays["binning~sgd.saturated"][-1, 0] and arrays["binning~sgd.h_t_x_cap"][-1] == pytest.approx(2.0)


def test_measuring_with_children_does_not_change_the_run(runs_dir):
    plain = execute(tiny_config(runs_dir / "a", train={"epochs": 6}))
    pooled = execute(tiny_config(runs_dir / "b", **AS_IF))
    a = read_npz(checkpoint_path(plain["run_dir"], 6))
    b = read_npz(checkpoint_path(pooled["run_dir"], 6))
    assert all(np.array_equal(a[k], b[k]) for k in a if k.startswith("weight."))


def test_resumed_run_gives_the_same_children_planes(runs_dir):
    a, b = full_and_resumed_events(runs_dir, 4, **AS_IF)
    assert [e["planes"]["binning~sgd"] for e in a] == [e["planes"]["binning~sgd"] for e in b]


@pytest.mark.parametrize("sections, message", [
    ({"as_if_random": {"pool": "seeds"}}, "withdrawn"),
    ({"as_if_random": {"pool": "epochs"}}, "withdrawn"),
    ({"as_if_random": {"pool": "weights"}}, "as_if_random.pool"),
    ({"as_if_random": {"pool": "sgd", "children": 1}}, "children"),
    ({"as_if_random": {"pool": "sgd", "window": 0}}, "window"),
    ({"as_if_random": {"pool": "sgd"}, "estimators": {"kde": {}}}, "repeated inputs"),
    ({"as_if_random": {"pool": "sgd"}, "schedule": {"kind": "delta_exact"}}, "delta_exact"),
    ({"as_if_random": {"pool": "sgd"}, "train": {"shuffle_batches": False}}, "shuffle_batches"),
])
def test_impossible_pooling_settings_are_refused(runs_dir, sections, message):
    with pytest.raises(UserError, match=message):
        tiny_config(runs_dir, **sections)


def test_as_if_random_preset_branches_children():
    cfg = load_preset("as-if-random")
    assert cfg.as_if_random.pool == "sgd" and cfg.as_if_random.children >= 2 and cfg.train.shuffle_batches
