"""Gradient phases: per-layer gradient statistics and the drift→diffusion transition."""

from __future__ import annotations

import numpy as np
import pytest

from ibtui.engine.phases import snr, transition_epochs
from ibtui.engine.runner import execute
from ibtui.rundir.store import CURVES, read_npz

from conftest import tiny_config


def test_transition_is_the_first_epoch_whose_ratio_stays_below_one():
    epochs = np.arange(1, 21)
    mean = np.ones((20, 2))
    std = np.full((20, 2), 0.5)
    std[12:, 0] = 2.0  # layer 0: below 1 from epoch 13 on
    std[5, 1] = 2.0  # layer 1: one noisy epoch (6) that does not last...
    std[15:, 1] = 3.0  # ...then below 1 from epoch 16 to the end (fewer than the window remain)
    assert transition_epochs(epochs, mean, std, window=3) == [13, 16]


def test_no_transition_while_the_mean_gradient_dominates():
    assert transition_epochs([1, 2, 3], np.ones((3, 1)), np.full((3, 1), 0.1)) == [None]


def test_snr_of_zero_spread_is_infinite():
    assert snr([1.0, 2.0], [0.0, 4.0]).tolist() == [np.inf, 0.5]


def test_gradient_norms_match_a_direct_computation(runs_dir):
    """One full-batch step per epoch: the epoch-1 mean gradient is the gradient of the training loss
    at the initial weights, and its spread over the single minibatch is zero."""
    import torch.nn.functional as F

    from ibtui.engine.runner import prepare

    cfg = tiny_config(runs_dir, train={"gradient_stats": True, "epochs": 2, "batch_size": 100000})
    prep = prepare(cfg)
    x, y = prep.x_all[prep.train_idx[0]], prep.y_all[prep.train_idx[0]]
    F.cross_entropy(prep.model(x)[0], y).backward()
    expected = [float(w.grad[0].norm()) for w in prep.model.weights]
    summary = execute(cfg)
    curves = read_npz(summary["run_dir"] + "/" + CURVES)
    assert [float(curves[f"grad_mean.{i}"][0]) for i in range(6)] == pytest.approx(expected, rel=1e-4)
    assert all(curves[f"grad_std.{i}"].max() < 1e-6 for i in range(6))


def test_run_with_gradient_stats_reports_transitions_and_epoch_events(runs_dir):
    events = []
    summary = execute(tiny_config(runs_dir, train={"gradient_stats": True, "epochs": 30}), on_event=events.append)
    epoch_events = [e for e in events if e["type"] == "epoch"]
    assert all(len(e["grad_mean"]) == len(e["grad_std"]) == 6 for e in epoch_events)
    curves = read_npz(summary["run_dir"] + "/" + CURVES)
    mean = np.stack([curves[f"grad_mean.{i}"] for i in range(6)], axis=1)
    std = np.stack([curves[f"grad_std.{i}"] for i in range(6)], axis=1)
    phases = summary["gradient_phases"]
    assert phases["transition_epoch"] == transition_epochs(curves["epoch"], mean, std)
    assert phases["final_snr"] == pytest.approx(list(mean[-1] / std[-1]))


def test_run_without_gradient_stats_has_none(runs_dir):
    summary = execute(tiny_config(runs_dir))
    assert "gradient_phases" not in summary
    assert not any(k.startswith("grad_") for k in read_npz(summary["run_dir"] + "/" + CURVES))


def test_replay_view_finds_the_same_transitions(runs_dir):
    from ibtui.tui.state import RunView

    summary = execute(tiny_config(runs_dir, train={"gradient_stats": True, "epochs": 30}))
    view = RunView.from_run_dir(summary["run_dir"])
    assert view.transitions() == summary["gradient_phases"]["transition_epoch"]


def test_plane_marks_the_transition_and_its_key_names_it(runs_dir):
    from ibtui.tui.plots import plane_figure, plane_key
    from ibtui.tui.state import RunView

    summary = execute(tiny_config(runs_dir, train={"gradient_stats": True, "epochs": 30},
                                  schedule={"kind": "every_n", "every": 1}))
    assert any(e is not None for e in summary["gradient_phases"]["transition_epoch"])
    view = RunView.from_run_dir(summary["run_dir"])
    assert "◇" in plane_figure(view, "binning", 100, 30)
    assert "drift→diffusion" in plane_key(view, "binning").plain
    first = min(e for e in summary["gradient_phases"]["transition_epoch"] if e is not None)
    before = max(e for e in view.planes["binning"] if e < first)
    assert "◇" not in plane_figure(view, "binning", 100, 30, cursor=before)
    assert "drift→diffusion" not in plane_key(view, "binning", cursor=before).plain
