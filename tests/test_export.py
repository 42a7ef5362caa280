"""Exports and publication figures: CSV of a plane, information-plane figures in PNG, PDF and SVG."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from ibtui.cli import app
from ibtui.engine.runner import execute
from ibtui.errors import UserError
from ibtui.export import export
from ibtui.rundir.reader import load_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    single = execute(tiny_config(root / "a", estimators={"binning": {"bin_size": 0.07}, "kde": {}}))["run_dir"]
    ensemble = execute(tiny_config(root / "b", train={"seeds": 3, "gradient_stats": True}))["run_dir"]
    return load_run(single), load_run(ensemble)


def colours_in_png(path: Path) -> int:
    """Distinct RGB colours of a PNG (matplotlib reads it back)."""
    from matplotlib import image

    pixels = image.imread(str(path))[..., :3].reshape(-1, 3)
    return len(np.unique(np.round(pixels * 255).astype(int), axis=0))


def test_csv_holds_every_epoch_layer_and_member_exactly(runs, tmp_path):
    run = runs[1]
    result = export([run], tmp_path, plane="binning", formats=["csv"])
    (path,) = result.paths
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    data = run.plane("binning")
    assert len(rows) == len(data.epochs) * len(run.layers) * 3
    first = rows[0]
    assert float(first["ixt_bits"]) == data.members_ixt[0, 0, 0] and int(first["member"]) == 0


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_information_plane_figures_are_written_in_each_format(runs, tmp_path, fmt):
    (path,) = export([runs[0]], tmp_path, plane="kde_upper", formats=[fmt]).paths
    data = path.read_bytes()
    assert len(data) > 2000
    assert data.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[fmt])
    if fmt == "png":
        assert colours_in_png(path) > 20  # the epoch colour scale, the paths, the text


def test_the_figure_shows_each_layer_the_colour_bar_and_the_entropies(runs):
    from ibtui import figures

    fig = figures.information_plane(runs[0], plane="kde_upper")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == runs[0].layers
    texts = [t.get_text() for t in ax.texts]
    assert " H(X)" in texts and "H(Y)" in texts
    assert any("epoch" in a.get_ylabel() for a in fig.axes[1:])  # the colour bar
    assert "kde_lower" in ax.get_legend().get_title().get_text()  # the other bound is named


def test_ensembles_draw_their_spread_and_several_runs_share_the_axes(runs):
    from ibtui import figures

    fig = figures.information_plane(list(runs), plane="binning")
    labels = fig.axes[0].get_legend_handles_labels()[1]  # each layer once (its marker), then each run (its line)
    assert labels == runs[0].layers + [f"A: {runs[0].id}", f"B: {runs[1].id}"]
    assert "±1 sd" in fig.axes[0].get_legend().get_title().get_text()


@pytest.mark.parametrize("kind, by", [("multiples", "plane"), ("multiples", "layer"), ("multiples", "run"),
                                      ("curves", "plane"), ("snr", "plane")])
def test_every_figure_kind_is_drawn(runs, tmp_path, kind, by):
    (path,) = export([runs[1], runs[0]] if by == "run" else [runs[1]], tmp_path, kind=kind, by=by,
                     plane="binning", formats=["png"]).paths
    assert colours_in_png(path) > 5


def test_cli_export_writes_the_named_file(runs, tmp_path):
    out = tmp_path / "figure.pdf"
    result = CliRunner().invoke(app, ["export", str(runs[0].path), "--plane", "binning", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("args, message", [(["--plane", "nope"], "no plane"), (["--kind", "pie"], "export kind"),
                                           (["--format", "gif"], "unknown export format")])
def test_cli_export_refuses_bad_requests_in_one_line(runs, args, message):
    result = CliRunner().invoke(app, ["export", str(runs[0].path), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_matplotlib_figures_are_skipped_and_the_reason_given(runs, tmp_path, monkeypatch):
    import ibtui.export as module

    monkeypatch.setattr(module, "have_matplotlib", lambda: False)
    result = export([runs[0]], tmp_path, plane="binning", formats=["csv", "png"])
    assert [p.suffix for p in result.paths] == [".csv"]
    assert "pip install 'ibtui[plot]'" in result.skipped[0]


def test_a_plane_not_yet_measured_cannot_be_exported(tmp_path):
    run = execute(tiny_config(tmp_path, train={"epochs": 0}))["run_dir"]
    (Path(run) / "events.jsonl").write_text("")
    with pytest.raises(UserError, match="nothing to export"):
        export([load_run(run)], tmp_path / "out", plane="binning")
