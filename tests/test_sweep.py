"""Sweeps: grid expansion, one run directory per cell, summaries, resume and failure reporting."""

import csv
import io
import json
import os

import pytest
from typer.testing import CliRunner

from ibtui.cli import app
from ibtui.rundir.store import read_meta, read_npz
from ibtui.engine.sweep import Outcome, Sweep, SweepSpec, parse_grid, run_local, run_ray, split_values
from ibtui.errors import UserError

runner = CliRunner()
TINY = ["--set", "train.epochs=6", "--set", "schedule.kind=every_n", "--set", "schedule.every=3",
        "--set", "estimators.kde=false", "--set", 'train.device="cpu"']
DIVERGING = ["--set", "model.activation=linear", "--set", "train.optimizer=sgd"]


def tiny_sets(*extra):
    return [TINY[i + 1] for i in range(0, len(TINY), 2)] + list(extra)


def sweep_cli(tmp_path, *args):
    return runner.invoke(app, ["sweep", "-p", "quick", *TINY, "--runs-dir", str(tmp_path), "--workers", "2", *args])


def recorder(sweep, check=lambda seen: None):
    """An on_outcome callback recording each outcome in ``sweep`` (and the list it returns)."""
    seen: list[Outcome] = []

    def on_outcome(outcome):
        seen.append(outcome)
        sweep.record(outcome)
        check(seen)
    return on_outcome, seen


def test_grid_expands_to_the_cartesian_product_in_order():
    spec = SweepSpec("quick", [parse_grid("model.activation=tanh,relu"),
                               parse_grid("estimators.binning.bin_size=0.01,0.07,0.3")])
    cells = spec.cells()
    assert len(cells) == 6
    assert [c.items for c in cells[:2]] == [["model.activation=tanh", "estimators.binning.bin_size=0.01"],
                                            ["model.activation=tanh", "estimators.binning.bin_size=0.07"]]
    assert cells[5].items == ["model.activation=relu", "estimators.binning.bin_size=0.3"]
    assert cells[5].name == "5-activation=relu,bin_size=0.3"
    assert len({c.name for c in cells}) == 6


def test_cells_resolve_to_configs_with_their_overrides_and_seeds():
    spec = SweepSpec("quick", [parse_grid("model.activation=tanh,relu")], ["train.epochs=7"], seeds=3)
    cfg = spec.config(spec.cells()[1], threads=2)
    assert cfg.model.activation == "relu" and cfg.train.epochs == 7
    assert cfg.train.seeds == 3 and cfg.train.threads == 2


def test_grid_values_split_at_commas_outside_brackets_and_quotes():
    assert split_values('[10,7],[5,3], "a,b"') == ["[10,7]", "[5,3]", '"a,b"']
    spec = SweepSpec("quick", [parse_grid("model.widths=[10,7],[5,3,2]")])
    assert [spec.config(c).model.widths for c in spec.cells()] == [[10, 7], [5, 3, 2]]


@pytest.mark.parametrize("item", ["model.activation", "=tanh", "model.activation=tanh,,relu",
                                  "model.activation=tanh,tanh"])
def test_malformed_grid_options_are_user_errors(item):
    with pytest.raises(UserError):
        parse_grid(item)


def test_a_key_on_two_axes_or_both_grid_and_set_is_refused():
    with pytest.raises(UserError, match="two --grid"):
        SweepSpec("quick", [parse_grid("train.lr=1,2"), parse_grid("train.lr=3,4")])
    with pytest.raises(UserError, match="both"):
        SweepSpec("quick", [parse_grid("train.lr=1,2")], ["train.lr=3"])


def test_the_same_command_gives_the_same_sweep_id_and_another_command_another():
    a = SweepSpec("quick", [parse_grid("model.activation=tanh,relu")], seeds=2)
    b = SweepSpec("quick", [parse_grid("model.activation=tanh,relu")], seeds=2)
    c = SweepSpec("quick", [parse_grid("model.activation=tanh,relu")], seeds=3)
    assert a.sweep_id == b.sweep_id != c.sweep_id
    assert a.sweep_id.startswith("quick-sweep-")


def test_bad_grid_key_is_a_one_line_error_before_anything_is_written(tmp_path):
    result = sweep_cli(tmp_path, "--grid", "model.nonsense=1,2")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nonsense" in lines[0]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_sweep_runs_every_cell_as_a_run_directory_and_writes_summaries(tmp_path):
    result = sweep_cli(tmp_path, "--grid", "model.activation=tanh,relu", "--grid", "estimators.binning.bin_size=0.07,0.3",
                       "--seeds", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (root,) = tmp_path.iterdir()
    assert summary["counts"]["done"] == 4 and len(summary["cells"]) == 4
    for cell in summary["cells"]:
        meta = read_meta(root / cell["name"])
        assert meta["status"] == "done" and len(meta["seeds"]) == 2
        assert 0.0 <= cell["test_acc"] <= 1.0 and cell["attempts"] == 1
        rows = cell["planes"]["binning"]
        assert [r["layer"] for r in rows] == meta["layers"]
        for r in rows:
            assert r["compression"] == pytest.approx(r["peak_ixt"] - r["final_ixt"])
            assert 0.0 <= r["final_ixt"] <= r["peak_ixt"] <= 12.0
            assert r["peak_ixt_sd"] >= 0.0 and r["statistic"] == "mean ± sd over 2 networks"
            members = read_npz(root / cell["name"] / "planes.npz")["binning.ixt_seeds"][:, :, meta["layers"].index(r["layer"])]
            assert r["peak_ixt"] == pytest.approx(members.max(axis=0).mean())  # mean of member peaks
    assert json.loads((root / "summary.json").read_text())["cells"] == summary["cells"]
    rows = list(csv.DictReader(io.StringIO((root / "summary.csv").read_text())))
    assert len(rows) == 4 * 6  # cells × layers of the one plane
    assert {r["model.activation"] for r in rows} == {"tanh", "relu"}
    assert {r["estimators.binning.bin_size"] for r in rows} == {"0.07", "0.3"}
    assert all(r["status"] == "done" and r["seeds"] == "2" for r in rows)
    coarse = [r for r in rows if r["estimators.binning.bin_size"] == "0.3" and r["layer"] == "h1:10"]
    fine = [r for r in rows if r["estimators.binning.bin_size"] == "0.07" and r["layer"] == "h1:10"]
    assert float(coarse[0]["peak_ixt"]) <= float(fine[0]["peak_ixt"])  # coarser bins, less information
    assert len((root / "results.jsonl").read_text().splitlines()) == 4


def test_running_the_same_sweep_again_skips_cells_that_are_done(tmp_path):
    args = ["--grid", "model.activation=tanh,relu", "--json"]
    assert sweep_cli(tmp_path, *args).exit_code == 0
    (root,) = tmp_path.iterdir()
    stamps = {p.name: (p / "meta.json").stat().st_mtime_ns for p in root.iterdir() if p.is_dir()}
    again = sweep_cli(tmp_path, *args)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert [c["status"] for c in summary["cells"]] == ["done", "done"]
    assert [c["attempts"] for c in summary["cells"]] == [1, 1]  # as recorded by the command that ran them
    assert {p.name: (p / "meta.json").stat().st_mtime_ns for p in root.iterdir() if p.is_dir()} == stamps


def test_a_stopped_cell_is_resumed_and_an_unstarted_one_started_on_rerun(tmp_path):
    args = ["--grid", "model.activation=tanh,relu", "--json"]
    assert sweep_cli(tmp_path, *args).exit_code == 0
    (root,) = tmp_path.iterdir()
    first, second = sorted(p for p in root.iterdir() if p.is_dir())
    meta = json.loads((first / "meta.json").read_text())
    (first / "meta.json").write_text(json.dumps({**meta, "status": "stopped"}))
    os.rename(second, root / "elsewhere")
    result = sweep_cli(tmp_path, *args)
    assert result.exit_code == 0, result.output
    assert read_meta(first)["status"] == "done" and read_meta(first)["resumed_from"] == 6
    assert read_meta(second)["status"] == "done"
    assert [c["attempts"] for c in json.loads(result.stdout)["cells"]] == [1, 1]


def test_a_failing_cell_is_retried_then_reported_and_the_others_finish(tmp_path):
    result = sweep_cli(tmp_path, *DIVERGING, "--grid", "train.lr=0.001,1e30", "--retries", "1", "--json")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 2 cells failed" in errors[0] and "Traceback" not in result.output
    (root,) = tmp_path.iterdir()
    summary = json.loads((root / "summary.json").read_text())
    good, bad = summary["cells"]
    assert good["status"] == "done" and good["attempts"] == 1
    assert bad["status"] == "failed" and bad["attempts"] == 2 and bad["error"].startswith("diverged")
    lines = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    assert sorted(line["status"] for line in lines) == ["done", "failed"]
    failed_rows = [r for r in csv.DictReader(io.StringIO((root / "summary.csv").read_text())) if r["status"] == "failed"]
    assert failed_rows and all(r["error"].startswith("diverged") for r in failed_rows)


def test_a_cell_that_fails_before_its_run_starts_is_reported_with_its_reason(tmp_path):
    result = sweep_cli(tmp_path, "--grid", f"data.dataset=12bit,npz:{tmp_path / 'missing.npz'}", "--retries", "0",
                       "--json")
    assert result.exit_code == 1
    (root,) = tmp_path.iterdir()
    good, bad = json.loads((root / "summary.json").read_text())["cells"]
    assert good["status"] == "done"
    assert bad["status"] == "failed" and bad["attempts"] == 1 and "missing.npz" in bad["error"]


def test_local_backend_reports_outcomes_as_cells_finish(tmp_path):
    spec = SweepSpec("quick", [parse_grid("model.activation=tanh,relu")], tiny_sets())
    sweep = Sweep(spec, tmp_path)
    sweep.open()

    def summary_holds_every_reported_cell(seen):
        on_disk = json.loads((sweep.root / "summary.json").read_text())
        assert sum(c["status"] == "done" for c in on_disk["cells"]) == len(seen)

    on_outcome, seen = recorder(sweep, summary_holds_every_reported_cell)
    assert run_local(sweep, sweep.cells, workers=1, retries=0, on_outcome=on_outcome)
    assert [o.cell.name for o in seen] == [c.name for c in sweep.cells]  # one worker: in order


def test_another_sweep_in_the_same_directory_is_refused(tmp_path):
    a = Sweep(SweepSpec("quick", [parse_grid("model.activation=tanh,relu")]), tmp_path, name="mine")
    a.open()
    b = Sweep(SweepSpec("quick", [parse_grid("model.activation=tanh,sigmoid")]), tmp_path, name="mine")
    with pytest.raises(UserError, match="different sweep"):
        b.open()


def test_ray_backend_runs_cells_as_ray_tasks_and_reports_a_failed_cell(tmp_path):
    ray = pytest.importorskip("ray")
    spec = SweepSpec("quick", [parse_grid("train.lr=0.001,1e30")], tiny_sets(*(DIVERGING[i + 1] for i in (0, 2))))
    sweep = Sweep(spec, tmp_path)
    sweep.open()
    on_outcome, seen = recorder(sweep)
    assert run_ray(sweep, sweep.cells, "local", retries=1, cpus_per_cell=1, gpus_per_cell=0, on_outcome=on_outcome,
                   init_kwargs={"num_cpus": 2, "object_store_memory": 100 << 20})
    assert not ray.is_initialized()  # the backend shut down the instance it started
    by_name = {o.cell.name: o for o in seen}
    good, bad = (by_name[c.name] for c in sweep.cells)
    assert good.status == "done" and good.result["test_acc"] is not None
    assert read_meta(sweep.cell_dir(good.cell))["status"] == "done"
    assert bad.status == "failed" and "diverged" in bad.error
    summary = json.loads((sweep.root / "summary.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["done", "failed"]


def test_sigterm_stops_the_running_cells_and_the_same_command_finishes_the_sweep(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "ibtui", "sweep", "-p", "quick", "--set", "train.epochs=400", "--set",
               "schedule.kind=every_n", "--set", "schedule.every=20", "--set", "estimators.kde=false", "--set",
               'train.device="cpu"', "--grid", "model.activation=tanh,relu", "--workers", "2", "--runs-dir",
               str(tmp_path), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # both cells have measured an epoch after 0
        events = list(tmp_path.glob("*/*/events.jsonl"))
        if len(events) == 2 and all(len(p.read_text().splitlines()) >= 2 for p in events):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    (root,) = tmp_path.iterdir()
    cells = sorted(p for p in root.iterdir() if p.is_dir())
    assert [read_meta(p)["status"] for p in cells] == ["stopped", "stopped"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for p in cells:
        meta = read_meta(p)
        assert meta["status"] == "done" and meta["epochs_done"] == 400 and "resumed_from" in meta
