"""The command line through typer's runner: presets, runs, and one-line errors with exit code 2."""

import json

import pytest
import torch
from typer.testing import CliRunner

from ibtui.cli import app
from ibtui.config import tomllib

runner = CliRunner()
TINY = ["--set", "train.epochs=6", "--set", "schedule.kind=every_n", "--set", "schedule.every=3",
        "--set", "estimators.kde=false", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_presets_lists_every_preset_with_its_description():
    result = invoke("presets")
    assert result.exit_code == 0
    for name in ("quick", "tishby-tanh", "saxe-tanh", "saxe-relu", "mnist-tanh", "mnist-relu"):
        assert name in result.output
    assert "Saxe" in result.output


def test_presets_show_prints_resolved_toml_with_overrides():
    result = invoke("presets", "show", "saxe-relu", "--set", "train.epochs=500")
    assert result.exit_code == 0
    data = tomllib.loads(result.output)
    assert data["train"]["epochs"] == 500 and data["model"]["activation"] == "relu"
    assert data["train"]["momentum"] == 0.0  # defaults are filled in


def test_presets_show_unknown_preset_is_a_one_line_error():
    assert_one_line_error(invoke("presets", "show", "nope"), "valid presets:")


def test_run_json_prints_a_machine_readable_summary(tmp_path):
    result = invoke("run", "--preset", "quick", *TINY, "--runs-dir", str(tmp_path), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "done" and summary["epochs_done"] == 6
    assert [row["layer"] for row in summary["planes"]["binning"]][-1] == "softmax:2"
    assert (tmp_path / summary["run_dir"].split("/")[-1] / "events.jsonl").is_file()


def test_run_prints_a_summary_table(tmp_path):
    result = invoke("run", "--preset", "quick", *TINY, "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "peak I(X;T)" in result.output and "h5:3" in result.output and "softmax:2" in result.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--set", "train.epochs=-5"], "train.epochs must be >= 0"),
        (["--set", "train.epoch=5"], "unknown key 'train.epoch'"),
        (["--set", "estimators.binning_fixed.bins=0"], "bins"),
        (["--set", "estimators.kde.noise_variance=0"], "noise_variance"),
        (["--set", "data.dataset=mat:/nonexistent/var_u.mat"], "/nonexistent/var_u.mat"),
        (["--set", "data.dataset=bogus"], "bogus"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_directory(tmp_path, args, fragment):
    result = invoke("run", *args, "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


def test_run_on_cuda_without_cuda_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("run", "--device", "cuda", "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert_one_line_error(result, "CUDA is not available")
    assert not (tmp_path / "runs").exists()


def test_help_lists_the_commands():
    result = invoke("--help")
    assert "run" in result.output and "presets" in result.output


def test_quick_preset_runs_end_to_end_and_shows_the_fitting_phase(tmp_path):
    result = invoke("run", "--preset", "quick", "--device", "cpu", "--runs-dir", str(tmp_path), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "done" and summary["epochs_done"] == summary["epochs_total"]
    assert summary["test_acc"] > 0.8
    from ibtui.rundir.store import read_events

    events = read_events(summary["run_dir"])
    ity_last_hidden = [e["planes"]["binning"]["ity"][-2] for e in events]
    assert ity_last_hidden[-1] > ity_last_hidden[0] + 0.3  # fitting: the 3-unit layer learns about Y
    assert set(events[-1]["planes"]) == {"binning", "kde_upper", "kde_lower"}


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    preset = tmp_path / "odd.toml"
    preset.write_text("estimators = [1, 2]\n")
    result = invoke("run", "--preset", str(preset), "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert_one_line_error(result, "[estimators] must be a table")


def test_sigterm_stops_a_headless_run_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from ibtui.rundir.store import read_events, read_meta

    proc = subprocess.Popen([sys.executable, "-m", "ibtui", "run", "-p", "quick", "--device", "cpu", "--quiet",
                             "--set", "train.epochs=100000", "--set", "estimators.kde=false",
                             "--runs-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob("*/checkpoints/e0000002.npz")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (run,) = tmp_path.iterdir()
    assert read_meta(run)["status"] == "stopped"
    assert len(read_events(run)) >= 3


def test_estimators_lists_every_registered_estimator_with_its_parameters():
    from ibtui.estimators import ESTIMATORS

    result = invoke("estimators")
    assert result.exit_code == 0
    for name in ESTIMATORS:
        assert name in result.output
    assert "bin_size=0.07" in result.output and "noise_variance=0.001" in result.output


def test_a_diverging_run_fails_with_its_reason_and_exit_1(tmp_path):
    result = invoke("run", "--set", "model.activation=linear", "--set", "train.optimizer=sgd", "--set", "train.lr=1e30",
                    "--set", "train.epochs=20", "--set", "estimators.kde=false", "--device", "cpu",
                    "--runs-dir", str(tmp_path), "--quiet", "--json")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "diverged" in errors[0] and "Traceback" not in result.output
    (run,) = tmp_path.iterdir()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"].startswith("diverged")


def test_run_with_seeds_reports_each_members_spread_in_json(tmp_path):
    result = invoke("run", "-p", "quick", *TINY, "--seeds", "2", "--runs-dir", str(tmp_path), "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["seeds"] == [0, 1]
    row = summary["planes"]["binning"][4]
    assert {"peak_ixt_sd", "final_ixt_sd", "compression_sd", "peak_epoch_sd"} <= set(row)
    assert row["statistic"] == "mean ± sd over 2 networks" and row["members"] == 2
    assert row["compression"] == pytest.approx(row["peak_ixt"] - row["final_ixt"])


def test_run_with_seeds_prints_the_spread_columns(tmp_path):
    result = invoke("run", "-p", "quick", *TINY, "--seeds", "2", "--runs-dir", str(tmp_path), "-q")
    assert result.exit_code == 0, result.output
    assert "2 networks: mean ± sd" in " ".join(result.output.split()) and "±" in result.output


def test_bad_seed_count_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("run", "-p", "quick", "--seeds", "0", "--runs-dir", str(tmp_path)), "train.seeds")


def test_runs_dir_given_before_the_command_is_where_run_writes(tmp_path):
    result = invoke("--runs-dir", str(tmp_path / "elsewhere"), "run", "--preset", "quick", *TINY, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert [p.parent for p in (tmp_path / "elsewhere").iterdir()] == [tmp_path / "elsewhere"]
    assert json.loads(result.stdout)["run_dir"].startswith(str(tmp_path / "elsewhere"))


def test_run_records_its_overrides_name_tags_and_note(tmp_path):
    result = invoke("run", "--preset", "quick", *TINY, "--set", "model.activation=relu", "--name", "baseline [x]",
                    "--tag", "ab", "--tag", "c,d", "--note", "first look", "--runs-dir", str(tmp_path), "--json",
                    "--quiet")
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["overrides"] == {"train.epochs": 6, "schedule.kind": "every_n", "schedule.every": 3,
                                 "estimators.kde": False, "train.device": "cpu", "model.activation": "relu"}
    assert (meta["name"], meta["tags"], meta["note"]) == ("baseline [x]", ["ab", "c", "d"], "first look")
    assert meta["description"].startswith("quick · relu · 6 epochs · every_n schedule · every=3 · no kde (preset quick:")


@pytest.mark.parametrize("args, fragment", [(["--name", "x" * 81], "--name"), (["--tag", "two words"], "--tag"),
                                            (["--note", "a\nb"], "--note"), (["--progress-every", "-1"], "--progress")])
def test_a_bad_name_tag_note_or_interval_is_one_line_exit_2(tmp_path, args, fragment):
    result = invoke("run", *TINY, *args, "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


def test_progress_on_a_non_terminal_is_plain_lines_with_the_eta(tmp_path):
    result = invoke("run", "--preset", "quick", *TINY, "--runs-dir", str(tmp_path), "--progress-every", "0")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "epoch " in line and "ETA" in line]
    assert len(lines) >= 6 and "\r" not in result.output and "━" not in result.output  # no bar
    assert lines[-1].startswith("quick · 6 epochs") and "epoch 6/6 (100%)" in lines[-1]


def test_replay_of_more_runs_than_colours_is_a_one_line_error(tmp_path):
    from ibtui.figures import RUN_COLOURS

    result = runner.invoke(app, ["replay", *[str(tmp_path / f"r{i}") for i in range(len(RUN_COLOURS) + 1)]])
    assert result.exit_code == 2
    assert "at most" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_headless_runs_output_fits_80_columns_and_its_summary_says_bits(tmp_path, monkeypatch):
    from rich.console import Console

    import ibtui.cli as cli

    monkeypatch.setattr(cli, "out", Console(width=80))
    monkeypatch.setattr(cli, "err", Console(width=80, stderr=True))
    result = runner.invoke(app, ["run", "--preset", "quick", *TINY, "--seeds", "2", "--progress-every", "0",
                                 "--name", "a name long enough to push the run line past eighty columns",
                                 "--runs-dir", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("ETA" in line for line in lines) and any("softmax:2" in line for line in lines)
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    header = next(i for i, line in enumerate(lines) if "I(X;T)" in line and "I(T;Y)" in line)
    assert lines[header + 1].split()[-5:] == ["bits", "bits", "bits", "epoch", "bits"]


def test_the_progress_bar_of_a_terminal_fits_80_columns():
    import io

    from rich.console import Console

    from ibtui.cli import progress_bar

    console = Console(width=80, file=io.StringIO(), force_terminal=True)
    bar = progress_bar(console)
    bar.add_task("quick · 100000 epochs · 8 networks · every_n schedule · every=3 · a long name", total=100000,
                 completed=99999, eta=3 * 3600.0,
                 mi="binning h1 12.00/1.00 h2 11.99/0.99 h3 11.00/0.90 h4 9.00/0.50 softmax 2.00/0.10")
    record = Console(width=80, file=io.StringIO(), record=True)
    record.print(bar.make_tasks_table(bar.tasks))
    lines = record.export_text().splitlines()
    assert lines and "ETA" in lines[0] and "epoch 99999/100000" in lines[0]
    assert max(len(line) for line in lines) <= 80
