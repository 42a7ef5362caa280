"""Seed ensembles: S networks trained together (train.seeds) behave as S single runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibtui.engine.model import MLP, Ensemble
from ibtui.engine.runner import execute
from ibtui.rundir.store import PLANES, checkpoint_path, read_events, read_meta, read_npz

from conftest import full_and_resumed_events, tiny_config

ESTIMATORS = {"binning": {"bin_size": 0.07}, "kde": {"noise_variance": 0.001}}


def run_planes(summary):
    return read_events(summary["run_dir"])


def test_ensemble_member_starts_from_the_single_network_of_its_seed():
    ensemble = Ensemble(12, [10, 7, 5], 2, "tanh", "idnns", seeds=[3, 4])
    x = torch.randn(9, 12)
    for index, seed in enumerate([3, 4]):
        torch.manual_seed(seed)
        single = MLP(12, [10, 7, 5], 2, "tanh")
        with torch.no_grad():
            for mine, theirs in zip(ensemble.forward_layers(x), single.forward_layers(x)):
                torch.testing.assert_close(mine[index], theirs, rtol=1e-6, atol=1e-6)


def test_two_seed_ensemble_reproduces_two_single_runs(runs_dir):
    ensemble = execute(tiny_config(runs_dir / "e", train={"seed": 5, "seeds": 2}, estimators=ESTIMATORS))
    singles = [execute(tiny_config(runs_dir / f"s{seed}", train={"seed": seed}, estimators=ESTIMATORS))
               for seed in (5, 6)]
    ensemble_events = read_events(ensemble["run_dir"])
    single_events = [read_events(s["run_dir"]) for s in singles]
    assert [e["epoch"] for e in ensemble_events] == [e["epoch"] for e in single_events[0]]
    for index, events in enumerate(single_events):
        for mine, theirs in zip(ensemble_events, events):
            assert mine["seeds"]["test_acc"][index] == pytest.approx(theirs["test_acc"], abs=1e-9)
            assert mine["seeds"]["train_loss"][index] == pytest.approx(theirs["train_loss"], rel=1e-5)
            for plane in ("binning", "kde_upper", "kde_lower"):
                for key in ("ixt", "ity"):
                    np.testing.assert_allclose(mine["planes"][plane][f"{key}_seeds"][index],
                                               theirs["planes"][plane][key], atol=1e-5)


def test_ensemble_plane_is_the_mean_of_its_members(runs_dir):
    summary = execute(tiny_config(runs_dir, train={"seeds": 3}))
    for event in read_events(summary["run_dir"]):
        plane = event["planes"]["binning"]
        assert np.asarray(plane["ixt_seeds"]).shape == (3, 6)
        np.testing.assert_allclose(plane["ixt"], np.mean(plane["ixt_seeds"], axis=0))
        np.testing.assert_allclose(plane["ity"], np.mean(plane["ity_seeds"], axis=0))
        assert event["test_acc"] == pytest.approx(np.mean(event["seeds"]["test_acc"]))


def test_members_with_different_seeds_learn_different_planes(runs_dir):
    summary = execute(tiny_config(runs_dir, train={"seeds": 2}))
    last = read_events(summary["run_dir"])[-1]["planes"]["binning"]["ixt_seeds"]
    assert last[0] != last[1]


def test_ensemble_arrays_keep_every_members_trajectory(runs_dir):
    summary = execute(tiny_config(runs_dir, train={"seeds": 3}))
    arrays = read_npz(summary["run_dir"] + "/" + PLANES)
    assert arrays["binning.ixt_seeds"].shape == (len(arrays["epochs"]), 3, 6)
    np.testing.assert_allclose(arrays["binning.ixt_seeds"].mean(axis=1), arrays["binning.ixt"])
    assert read_meta(summary["run_dir"])["seeds"] == [0, 1, 2]


def test_ensemble_checkpoint_holds_stacked_weights(runs_dir):
    summary = execute(tiny_config(runs_dir, train={"seeds": 4}))
    weights = np.load(checkpoint_path(summary["run_dir"], 12), allow_pickle=False)
    assert weights["weight.0"].shape == (4, 10, 12) and weights["bias.5"].shape == (4, 1, 2)
    assert weights["resume.rng"].shape[0] == 4


def test_summary_reports_mean_and_spread_of_member_peaks(runs_dir):
    summary = execute(tiny_config(runs_dir, train={"seeds": 3}))
    arrays = read_npz(summary["run_dir"] + "/" + PLANES)
    per_member = arrays["binning.ixt_seeds"][:, :, 4]  # the 3-unit layer, (E, S)
    row = summary["planes"]["binning"][4]
    # every number is the mean of each member's own value, with the members' sd beside it
    assert row["peak_ixt"] == pytest.approx(per_member.max(axis=0).mean())
    assert row["peak_ixt_sd"] == pytest.approx(per_member.max(axis=0).std(ddof=1))
    assert row["final_ixt"] == pytest.approx(per_member[-1].mean())
    assert row["compression"] == pytest.approx((per_member.max(axis=0) - per_member[-1]).mean())
    assert row["statistic"] == "mean ± sd over 3 networks"


def test_resumed_ensemble_matches_an_uninterrupted_one(runs_dir):
    a, b = full_and_resumed_events(runs_dir, 7, train={"seeds": 2})
    assert [e["epoch"] for e in a] == [e["epoch"] for e in b]
    for x, y in zip(a, b):
        assert x["planes"]["binning"]["ixt_seeds"] == y["planes"]["binning"]["ixt_seeds"]
        assert x["seeds"]["train_loss"] == pytest.approx(y["seeds"]["train_loss"], rel=1e-6)


@pytest.mark.parametrize("seeds", [0, -1, 1001])
def test_impossible_seed_counts_are_refused(runs_dir, seeds):
    from ibtui.errors import UserError

    with pytest.raises(UserError, match="train.seeds"):
        tiny_config(runs_dir, train={"seeds": seeds})


def ensemble_measure(epoch: int, members_ixt: list[list[float]]) -> dict:
    ity = [[0.2 + 0.3 * i] * len(row) for i, row in enumerate(members_ixt)]
    return {"type": "measure", "epoch": epoch, "train_loss": 0.5, "train_acc": 0.5, "test_loss": 0.5,
            "test_acc": 0.5, "planes": {"binning": {
                "ixt": list(np.mean(members_ixt, axis=0)), "ity": list(np.mean(ity, axis=0)),
                "ixt_seeds": members_ixt, "ity_seeds": ity}}}


def test_run_view_keeps_member_values_and_their_spread():
    from ibtui.tui.state import RunView

    view = RunView()
    view.apply({"type": "start", "run_dir": "x", "meta": {"layers": ["h1:2", "softmax:2"], "seeds": [0, 1, 2]}})
    view.apply(ensemble_measure(0, [[1.0, 0.5], [2.0, 0.5], [3.0, 0.5]]))
    assert view.n_members == 3
    ixt_sd, ity_sd = view.spread("binning", 0)
    assert ixt_sd == pytest.approx([1.0, 0.0]) and ity_sd == pytest.approx([0.3, 0.3])


def test_run_view_rejects_member_values_of_the_wrong_width():
    from ibtui.tui.state import RunView

    view = RunView()
    view.apply({"type": "start", "run_dir": "x", "meta": {"layers": ["h1:2", "softmax:2"], "seeds": [0, 1]}})
    bad = ensemble_measure(0, [[1.0, 0.5], [2.0, 0.5]])
    bad["planes"]["binning"]["ixt_seeds"] = [[1.0], [2.0]]
    with pytest.raises(ValueError, match="ixt_seeds"):
        view.apply(bad)
    assert 0 not in view.planes.get("binning", {}) and not view.members


def test_plane_figure_of_an_ensemble_says_so_and_draws_the_band():
    from ibtui.tui.plots import plane_figure
    from ibtui.tui.state import RunView

    view = RunView()
    view.apply({"type": "start", "run_dir": "x", "meta": {"layers": ["h1:2", "softmax:2"], "seeds": [0, 1, 2]}})
    for epoch in range(3):
        view.apply(ensemble_measure(epoch, [[1.0 + epoch, 0.5], [5.0 + epoch, 0.5], [9.0 + epoch, 0.5]]))
    single = RunView()
    single.apply({"type": "start", "run_dir": "x", "meta": {"layers": ["h1:2", "softmax:2"]}})
    for epoch in range(3):
        event = ensemble_measure(epoch, [[5.0 + epoch, 0.5]])
        for key in ("ixt_seeds", "ity_seeds"):
            del event["planes"]["binning"][key]
        single.apply(event)
    with_band = plane_figure(view, "binning", 100, 30)
    without = plane_figure(single, "binning", 100, 30)
    assert "mean of 3 networks" in with_band and "networks" not in without
    assert with_band.count("•") > without.count("•")


def test_fast_tanh_of_a_large_batch_matches_torch_tanh_and_its_gradient():
    from ibtui.engine.model import FAST_TANH_MIN_ELEMENTS, fast_tanh

    x = (torch.randn(FAST_TANH_MIN_ELEMENTS + 7) * 4).requires_grad_()
    fast_tanh(x).pow(2).sum().backward()
    fast_grad = x.grad.clone()
    x.grad = None
    torch.tanh(x).pow(2).sum().backward()
    torch.testing.assert_close(fast_tanh(x.detach()), torch.tanh(x.detach()), rtol=0, atol=3e-7)
    torch.testing.assert_close(fast_grad, x.grad, rtol=0, atol=1e-6)


def _engine(runs_dir, **sections):
    import logging

    from ibtui.engine.runner import Engine, prepare

    return Engine(prepare(tiny_config(runs_dir, **sections)), None, lambda event: None, logging.getLogger("test"))


def test_members_estimated_side_by_side_in_threads_equal_members_estimated_one_by_one(runs_dir, monkeypatch):
    from ibtui.engine.runner import Engine

    engine = _engine(runs_dir, train={"seeds": 3, "threads": 2}, estimators=ESTIMATORS)
    engine.trainer.epoch(1)
    assert engine.member_workers(2) == 2
    threaded = engine.measure(engine.model, 1)["planes"]
    monkeypatch.setattr(Engine, "member_workers", lambda self, threads: 1)
    serial = engine.measure(engine.model, 1)["planes"]
    assert set(threaded) == set(serial) == {"binning", "kde_upper", "kde_lower"}
    for plane in serial:
        for key in ("ixt_seeds", "ity_seeds"):
            np.testing.assert_allclose(threaded[plane][key], serial[plane][key], rtol=0, atol=1e-9)


def test_an_estimator_using_the_global_rng_keeps_members_in_one_thread(runs_dir):
    engine = _engine(runs_dir, train={"seeds": 3}, estimators={"binning": {"bin_size": 0.07}, "infonce": {}})
    assert engine.member_workers(2) == 1
    assert _engine(runs_dir, train={"seeds": 1}).member_workers(2) == 1
