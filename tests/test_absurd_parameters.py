"""Absurd estimator parameters (`ibtui analyze`, `ibtui run --set`): one `error:` line, exit 2, no
traceback, nothing written. They are refused by the estimators' own validation (``validate`` on
construction, ``validate_for`` against the MI set), the one mechanism behind every front door."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from ibtui.cli import app
from ibtui.engine.runner import execute


def snapshot(root):
    """Every file under ``root`` with its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return execute(tiny_config(tmp_path_factory.mktemp("runs"), train={"epochs": 2}))["run_dir"]


def assert_one_line_refusal(result, before, after, fragment):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output
    assert after == before  # nothing written, nothing changed


@pytest.mark.parametrize("args, fragment", [
    (["-e", "binning", "--bins", "1e12"], "bins"),
    (["-e", "binning_adaptive", "--bins", "1000000000000"], "bins"),
    (["-e", "ksg", "--set", "k=100000"], "k"),
    (["-e", "lga", "--set", "k=5000"], "k"),
    (["-e", "lga", "--set", "seed=1e30"], "seed"),
    (["-e", "infonce", "--set", "steps=1e12"], "steps"),
    (["-e", "binning", "--vary", "bin_size=1e-45,0.07"], "bin_size"),
], ids=["bins-1e12", "adaptive-bins-1e12", "ksg-k-above-set", "lga-k-above-set", "lga-seed-1e30",
        "infonce-steps-1e12", "bin-size-underflows-float32"])
def test_an_absurd_analysis_parameter_is_one_line_and_writes_nothing(run, args, fragment):
    before = snapshot(Path(run))
    result = CliRunner().invoke(app, ["analyze", run, *args])
    assert_one_line_refusal(result, before, snapshot(Path(run)), fragment)


def test_a_ksg_k_larger_than_the_mi_set_is_refused_before_a_run_directory_exists(tmp_path):
    result = CliRunner().invoke(app, ["run", "--set", "train.epochs=1", "--set", "estimators.kde=false",
                                      "--set", "estimators.ksg.k=300", "--set", "data.mi_max_samples=256",
                                      "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert_one_line_refusal(result, {}, snapshot(tmp_path), "estimators.ksg.k")
    assert not (tmp_path / "runs").exists()

