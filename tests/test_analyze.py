"""Re-analysis without retraining (``ibtui analyze``): planes recomputed from checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ibtui.cli import app
from ibtui.engine.analyze import analyze
from ibtui.rundir.reader import load_run
from ibtui.engine.data import load_dataset
from ibtui.engine.model import Ensemble
from ibtui.engine.runner import execute
from ibtui.rundir.store import EVENTS, PLANES, checkpoint_path, read_events, read_npz
from ibtui.errors import UserError
from ibtui.estimators import MISet
from ibtui.estimators.binning import FixedBinning

from conftest import tiny_config

BINS = [8, 12, 30]


@pytest.fixture
def run(runs_dir):
    return execute(tiny_config(runs_dir))["run_dir"]


def planes_at(run_dir, epoch, bins):
    """binning_fixed with ``bins`` on the checkpoint of ``epoch``, computed directly."""
    weights = np.load(checkpoint_path(run_dir, epoch), allow_pickle=False)
    model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh")
    model.load_state_arrays({k: torch.as_tensor(weights[k]) for k in weights.files if not k.startswith("resume.")})
    data = load_dataset("12bit")
    with torch.no_grad():
        layers = [layer[0] for layer in model.forward_layers(torch.as_tensor(data.x))]
    return FixedBinning(bins=bins).estimate(layers, MISet.from_arrays(data.x, data.y))["binning_fixed"]


def test_analysis_recomputes_every_measured_epoch_for_every_value(run):
    description = analyze(run, "binning_fixed", ("bins", BINS))
    arrays = read_npz(os.path.join(run, description["arrays"]))
    measured = [e["epoch"] for e in read_events(run)]
    assert description["epochs"] == measured and arrays["epochs"].tolist() == measured
    for bins in BINS:
        ixt, ity = planes_at(run, measured[-1], bins)
        np.testing.assert_allclose(arrays[f"binning_fixed[bins={bins}].ixt"][-1], ixt)
        np.testing.assert_allclose(arrays[f"binning_fixed[bins={bins}].ity"][-1], ity)


def test_more_bins_never_lower_the_binned_ixt_of_nested_grids(run):
    """5 edges on [-1, 1] (linspace) are a subset of 9 edges: the finer partition refines the coarser."""
    description = analyze(run, "binning_fixed", ("bins", [5, 9]))
    arrays = read_npz(os.path.join(run, description["arrays"]))
    coarse, fine = arrays["binning_fixed[bins=5].ixt"], arrays["binning_fixed[bins=9].ixt"]
    assert (fine >= coarse - 1e-9).all()  # a refinement of the partition cannot lose information


def test_analysis_leaves_the_runs_own_record_untouched(run):
    before = {name: open(os.path.join(run, name), "rb").read() for name in (EVENTS, PLANES)}
    analyze(run, "binning_fixed", ("bins", BINS))
    assert before == {name: open(os.path.join(run, name), "rb").read() for name in (EVENTS, PLANES)}


def test_repeating_an_analysis_replaces_it(run):
    analyze(run, "binning_fixed", ("bins", [8]))
    analyze(run, "binning_fixed", ("bins", [12, 30]))
    (analysis,) = load_run(run).analyses
    assert analysis.values == (12, 30) and "binning_fixed[bins=8]" not in analysis.planes


def test_ensemble_analysis_keeps_members_and_their_mean(runs_dir):
    run = execute(tiny_config(runs_dir, train={"seeds": 2}))["run_dir"]
    description = analyze(run, "binning", ("bin_size", [0.07]))
    arrays = read_npz(os.path.join(run, description["arrays"]))
    members = arrays["binning[bin_size=0.07].ixt_seeds"]
    assert members.shape == (len(description["epochs"]), 2, 6)
    np.testing.assert_allclose(members.mean(axis=1), arrays["binning[bin_size=0.07].ixt"])
    # the run itself measured binning 0.07: the re-analysis must reproduce it exactly
    np.testing.assert_allclose(arrays["binning[bin_size=0.07].ixt"], read_npz(os.path.join(run, PLANES))["binning.ixt"])


@pytest.mark.parametrize("kind, vary, message", [
    ("nope", ("bins", [8]), "unknown estimator"),
    ("binning_fixed", ("binz", [8]), "unknown key"),
    ("binning_fixed", ("bins", [0]), "bins"),
    ("binning_fixed", ("bins", []), "at least one value"),
])
def test_bad_analysis_requests_are_one_line_user_errors(run, kind, vary, message):
    with pytest.raises(UserError, match=message):
        analyze(run, kind, vary)


def test_a_run_without_checkpoints_cannot_be_analyzed(runs_dir):
    run = execute(tiny_config(runs_dir, store={"checkpoints": False}))["run_dir"]
    with pytest.raises(UserError, match="no checkpoints"):
        analyze(run, "binning_fixed", ("bins", [8]))


def test_cli_analyze_with_bins_prints_the_family_and_stores_it(run):
    result = CliRunner().invoke(app, ["analyze", run, "--estimator", "binning", "--bins", "8,12,30"])
    assert result.exit_code == 0, result.output
    assert "binning_fixed" in result.output and "h5:3" in result.output
    assert os.path.isfile(os.path.join(run, "analysis", "binning_fixed-bins.npz"))


def test_cli_analyze_json_describes_the_stored_arrays(run):
    result = CliRunner().invoke(app, ["analyze", run, "-e", "kde", "--vary", "noise_variance=0.001,0.01", "--json"])
    assert result.exit_code == 0, result.output
    description = json.loads(result.stdout)
    assert description["planes"] == ["kde_upper[noise_variance=0.001]", "kde_lower[noise_variance=0.001]",
                                      "kde_upper[noise_variance=0.01]", "kde_lower[noise_variance=0.01]"]


def test_cli_analyze_without_a_sweep_runs_the_estimator_once_at_its_settings(run):
    result = CliRunner().invoke(app, ["analyze", run, "--estimator", "binning", "--set", "bin_size=0.07"])
    assert result.exit_code == 0, result.output
    arrays = read_npz(os.path.join(run, "analysis", "binning.npz"))
    np.testing.assert_array_equal(arrays["binning[bin_size=0.07].ixt"], read_npz(os.path.join(run, PLANES))["binning.ixt"])


@pytest.mark.parametrize("args", [["--estimator", "binning", "--bins", "8", "--vary", "x=1"],
                                  ["--estimator", "kde", "--vary", "noise_variance"]])
def test_cli_analyze_needs_one_well_formed_sweep(run, args):
    result = CliRunner().invoke(app, ["analyze", run, *args])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_cli_analyze_of_a_foreign_directory_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["analyze", str(tmp_path), "--estimator", "binning", "--bins", "8"])
    assert result.exit_code == 2 and "not an ibtui run directory" in result.output


def test_replay_view_lists_the_family_and_its_planes(run):
    from ibtui.tui.plots import family_figure
    from ibtui.tui.state import RunView

    analyze(run, "binning_fixed", ("bins", BINS))
    view = RunView.from_run_dir(run)
    assert view.families == {"binning_fixed-bins": [f"binning_fixed[bins={b}]" for b in BINS]}
    assert view.plane_names[0] == "binning" and "binning_fixed[bins=12]" in view.plane_names
    assert view.family_of("binning_fixed[bins=30]") == "binning_fixed-bins"
    figure = family_figure(view, "binning_fixed-bins", 4, 100, 30)
    assert all(f"bins={b}" in figure for b in BINS) and "h5:3" in figure


def test_replay_view_skips_a_corrupt_analysis_with_a_warning(run):
    analyze(run, "binning_fixed", ("bins", [8]))
    with open(os.path.join(run, "analysis", "binning_fixed-bins.npz"), "wb") as fh:
        fh.write(b"not a zip")
    from ibtui.tui.state import RunView

    view = RunView.from_run_dir(run)
    assert view.families == {} and view.plane_names == ["binning"]


def _registered():
    import dataclasses

    from ibtui.estimators import ESTIMATORS

    for kind, cls in ESTIMATORS.items():
        first = next((f for f in dataclasses.fields(cls) if f.init), None)  # discrete has no parameter
        yield kind, first and first.name, first and first.default


@pytest.mark.parametrize("kind, param, value", list(_registered()))
def test_reanalysis_at_the_runs_own_settings_gives_the_runs_planes_back(runs_dir, kind, param, value):
    """One measurement function for the run and for analyze: the same planes, for every estimator
    (a noisy network for the noisy one, with its Monte-Carlo draws seeded by member and epoch)."""
    sections = {"estimators": {kind: {}}, "train": {"epochs": 4, "seeds": 2},
                "data": {"mi_max_samples": 300}, "schedule": {"kind": "every_n", "every": 2}}
    if kind == "noisy_mc":
        sections["model"] = {"noise_std": 0.1}
        sections["estimators"] = {kind: {"noise_std": 0.1, "draws": 3}}
        value = 0.1 if param == "noise_std" else value
    run = execute(tiny_config(runs_dir, **sections))["run_dir"]
    fixed = {k: v for k, v in sections["estimators"][kind].items() if k != param}
    description = analyze(run, kind, (param, [value]) if param else None, fixed=fixed)
    arrays = read_npz(os.path.join(run, "analysis", f"{kind}-{param}.npz" if param else f"{kind}.npz"))
    own = read_npz(os.path.join(run, PLANES))
    for label in description["planes"]:
        plane = label.split("[")[0]
        for key in ("ixt", "ity", "ixt_seeds", "ity_seeds"):
            np.testing.assert_array_equal(arrays[f"{label}.{key}"], own[f"{plane}.{key}"], err_msg=f"{label}.{key}")
