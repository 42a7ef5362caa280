"""The Python API: load_run / load_sweep (the one reader), to_frame, follow, the Recorder, examples."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ibtui
from conftest import tiny_config
from ibtui.engine.analyze import analyze
from ibtui.engine.runner import execute
from ibtui.errors import UserError
from ibtui.estimators import Binning, MISet
from ibtui.rundir.store import read_npz

ROOT = Path(__file__).resolve().parents[1]


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 2))


def data(n=200):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2, (n, 4), generator=g).float()
    return x, (x.sum(1) > 2).long()


def test_an_engine_run_reads_back_with_the_arrays_it_wrote(runs_dir):
    run_dir = execute(tiny_config(runs_dir, train={"seeds": 2}))["run_dir"]
    run = ibtui.load_run(run_dir)
    arrays = read_npz(Path(run_dir) / "planes.npz")
    plane = run.plane("binning")
    np.testing.assert_array_equal(plane.epochs, arrays["epochs"])
    np.testing.assert_array_equal(plane.ixt, arrays["binning.ixt_seeds"])
    np.testing.assert_array_equal(plane.ixt_mean, arrays["binning.ixt"])
    assert run.layers == ["h1:10", "h2:7", "h3:5", "h4:4", "h5:3", "softmax:2"] and run.status == "done"
    curves = run.curves
    assert curves["epoch"].tolist() == list(range(1, 13))


def test_an_analysis_reads_back_with_the_arrays_it_wrote(runs_dir):
    run_dir = execute(tiny_config(runs_dir))["run_dir"]
    analyze(run_dir, "binning_fixed", ("bins", [8, 30]))
    arrays = read_npz(Path(run_dir) / "analysis" / "binning_fixed-bins.npz")
    (analysis,) = ibtui.load_run(run_dir).analyses
    assert analysis.values == (8, 30)
    for label, plane in analysis.planes.items():
        np.testing.assert_array_equal(plane.ixt, arrays[f"{label}.ixt"])
    assert ibtui.load_run(run_dir).plane("binning_fixed[bins=8]").ixt.shape == (5, 6)


def test_the_recorder_measures_any_model_and_its_run_reads_back(tmp_path):
    model, (x, y) = mlp(), data()
    rec = ibtui.Recorder(model, layers=["0", "3", "4"], inputs=x, labels=y, schedule="every", epochs=3,
                         run_dir=tmp_path / "mine")
    expected0 = Binning(0.07).estimate([model[0](x).detach(), model[:4](x).detach(), model(x).detach()],
                                       MISet.from_arrays(x.numpy(), y.numpy()))["binning"]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert rec.step(epoch + 1, train_loss=float(loss.detach()))
    rec.close()
    run = ibtui.load_run(tmp_path / "mine")
    assert run.layers == ["0:6", "3:3", "4:2"] and run.status == "done" and run.epochs == [0, 1, 2, 3]
    plane = run.plane("binning")
    np.testing.assert_allclose(plane.ixt[0], expected0[0], atol=1e-12)
    arrays = read_npz(tmp_path / "mine" / "planes.npz")
    np.testing.assert_array_equal(plane.ixt, arrays["binning.ixt"])
    assert run.curves["train_loss"].shape == (3,) and run.records[1].train_loss == pytest.approx(run.curves["train_loss"][0])


def test_recorder_layers_are_picked_by_glob_pattern_in_model_order():
    from ibtui.recorder import resolve_layers

    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    assert resolve_layers(model, ["*"]) == ["0", "1", "2"]
    with pytest.raises(UserError, match="no module"):
        resolve_layers(model, ["fc9"])


def test_the_recorder_follows_its_schedule(tmp_path):
    model, (x, y) = mlp(), data()
    with ibtui.Recorder(model, layers=["4"], inputs=x, labels=y, schedule={"kind": "every_n", "every": 3},
                        epochs=7, run_dir=tmp_path / "r") as rec:
        measured = [rec.step(e) for e in range(1, 8)]
    assert measured == [False, False, True, False, False, True, True]
    assert ibtui.load_run(tmp_path / "r").epochs == [0, 3, 6, 7]


def test_an_exception_inside_the_recorder_marks_the_run_failed(tmp_path):
    model, (x, y) = mlp(), data()
    with pytest.raises(RuntimeError):
        with ibtui.Recorder(model, layers=["4"], inputs=x, labels=y, schedule="every", run_dir=tmp_path / "r"):
            raise RuntimeError("diverged")
    run = ibtui.load_run(tmp_path / "r")
    assert run.status == "failed" and "diverged" in run.meta["error"]


def test_follow_yields_the_records_of_a_run_still_being_written(tmp_path):
    model, (x, y) = mlp(), data()
    rec = ibtui.Recorder(model, layers=["4"], inputs=x, labels=y, schedule="every", epochs=5, run_dir=tmp_path / "r")
    run = ibtui.load_run(tmp_path / "r")
    assert run.status == "running" and run.epochs == [0]

    def write():
        for epoch in range(1, 6):
            time.sleep(0.15)
            rec.step(epoch)
        rec.close()

    writer = threading.Thread(target=write)
    writer.start()
    seen = [record.epoch for record in run.follow(interval=0.05, timeout=30)]
    writer.join()
    assert seen == [0, 1, 2, 3, 4, 5] and run.status == "done"


def test_to_frame_is_tidy_with_one_row_per_plane_layer_epoch_member(runs_dir):
    pytest.importorskip("pandas")
    run = ibtui.load_run(execute(tiny_config(runs_dir, train={"seeds": 2}))["run_dir"])
    frame = run.to_frame()
    assert list(frame.columns) == ["plane", "layer", "epoch", "member", "ixt_bits", "ity_bits"]
    assert len(frame) == 5 * 6 * 2  # epochs × layers × members of the one plane
    row = frame[(frame.epoch == 12) & (frame.member == 1) & (frame.layer == "h5:3")]
    assert float(row.ixt_bits.iloc[0]) == run.plane("binning").ixt[-1, 1, 4]


def test_to_frame_without_pandas_says_how_to_get_it(runs_dir, monkeypatch):
    run = ibtui.load_run(execute(tiny_config(runs_dir))["run_dir"])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UserError, match=r"ibtui\[notebook\]"):
        run.to_frame()


def test_load_sweep_gives_its_cells_and_their_runs(tmp_path):
    pytest.importorskip("pandas")
    from typer.testing import CliRunner

    from ibtui.cli import app

    result = CliRunner().invoke(app, ["sweep", "-p", "quick", "--set", "train.epochs=3", "--set", "estimators.kde=false",
                                      "-g", "train.lr=1e-3,4e-4", "--workers", "1", "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    (root,) = tmp_path.iterdir()
    sweep = ibtui.load_sweep(root)
    assert [c.overrides["train.lr"] for c in sweep.cells] == ["1e-3", "4e-4"]
    frame = sweep.to_frame()
    assert set(frame.cell) == {c.name for c in sweep.cells} and "train.lr" in frame.columns


@pytest.mark.parametrize("script, args", [("cnn_recorder.py", ["--epochs", "3"]), ("notebook_api.py", ["--out", "plane.png"])])
def test_the_examples_run_end_to_end(tmp_path, script, args):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--runs-dir", str(tmp_path / "runs"), *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = ibtui.load_run(run_dir)
    assert run.status == "done" and len(run.epochs) >= 3
    if script == "cnn_recorder.py":  # the app reads it as it reads its own runs
        from ibtui.tui.state import RunView

        view = RunView.from_run_dir(run_dir)
        assert view.layers == run.layers and view.epochs == run.epochs
