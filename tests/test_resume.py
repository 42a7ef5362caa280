"""`ibtui resume`: a stopped or killed run continues and produces the uninterrupted run's epochs."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_same_arrays, by_epoch, stop_at, tiny_config
from ibtui.cli import app
from ibtui.engine.runner import execute, resume
from ibtui.rundir.store import read_events, read_meta, read_npz
from ibtui.errors import UserError


@pytest.mark.parametrize("schedule", [{"kind": "every_n", "every": 3},
                                      {"kind": "delta_exact", "delta": 0.05, "initial_skip": 4, "max_skip": 8},
                                      {"kind": "delta_approx", "delta": 0.05, "initial_skip": 2}])
def test_resume_after_a_stop_gives_the_uninterrupted_epochs(tmp_path, schedule):
    settings = dict(schedule=schedule, train={"epochs": 24, "lr": 0.005})
    whole = execute(tiny_config(tmp_path / "whole", **settings))
    stop, on_event = stop_at(8)
    cut = execute(tiny_config(tmp_path / "cut", **settings), on_event=on_event, stop=stop)
    assert cut["status"] == "stopped"
    again = resume(cut["run_dir"])
    assert again["status"] == "done" and read_meta(cut["run_dir"])["status"] == "done"
    assert by_epoch(cut["run_dir"]) == by_epoch(whole["run_dir"])
    assert read_npz(f"{cut['run_dir']}/planes.npz")["epochs"].tolist() == sorted(by_epoch(whole["run_dir"]))
    curves_cut, curves_whole = (read_npz(f"{r['run_dir']}/curves.npz") for r in (cut, whole))
    assert curves_cut["epoch"].tolist() == curves_whole["epoch"].tolist()
    assert curves_cut["train_loss"].tolist() == curves_whole["train_loss"].tolist()


def test_resume_after_sigkill_gives_the_uninterrupted_epochs(tmp_path):
    args = ["--set", "train.epochs=60", "--set", "estimators.kde=false", "--set", "schedule.kind=every_n",
            "--set", "schedule.every=2", "--device", "cpu", "--quiet", "--json"]
    whole = CliRunner().invoke(app, ["run", *args, "--runs-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    proc = subprocess.Popen([sys.executable, "-m", "ibtui", "run", *args, "--runs-dir", str(tmp_path / "cut")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any((tmp_path / "cut").glob("*/checkpoints/e0000010.npz")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (cut,) = (tmp_path / "cut").iterdir()
    assert read_meta(cut)["status"] == "running"  # killed: nobody could say otherwise
    result = CliRunner().invoke(app, ["resume", str(cut), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    (ref,) = (tmp_path / "whole").iterdir()
    assert by_epoch(cut) == by_epoch(ref)
    assert_same_arrays(cut, ref)


def snapshot(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in Path(run).rglob("*") if p.is_file()}


def stopped_run(tmp_path, epoch=6, **sections):
    stop, on_event = stop_at(epoch)
    cut = execute(tiny_config(tmp_path / "cut", **sections), on_event=on_event, stop=stop)
    assert cut["status"] == "stopped"
    return cut["run_dir"]


def test_a_resume_interrupted_while_it_restores_changes_nothing(tmp_path, monkeypatch):
    run = stopped_run(tmp_path)
    before = snapshot(run)
    from ibtui.engine.runner import Engine

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl+C or SIGHUP seconds into the resume

    monkeypatch.setattr(Engine, "restore", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resume(run)
    assert snapshot(run) == before


def test_a_resume_refused_for_a_bad_checkpoint_changes_nothing(tmp_path):
    run = stopped_run(tmp_path)
    arrays = read_npz(Path(run) / "checkpoints" / "e0000006.npz")
    arrays["resume.rng"] = arrays["resume.rng"][:, :7]  # a malformed batch-order state
    np.savez(Path(run) / "checkpoints" / "e0000006.npz", **arrays)
    before = snapshot(run)
    with pytest.raises(UserError, match="does not fit"):
        resume(run)
    assert snapshot(run) == before


def test_a_missing_last_checkpoint_resumes_from_the_one_before_and_ends_as_the_whole_run(tmp_path):
    whole = execute(tiny_config(tmp_path / "whole"))["run_dir"]
    run = stopped_run(tmp_path, 9)
    (Path(run) / "checkpoints" / "e0000009.npz").unlink()
    (Path(run) / "checkpoints" / "e0000003.npz").unlink()  # an earlier one is not needed
    assert resume(run)["status"] == "done"
    assert [e["epoch"] for e in read_events(run)] == [0, 3, 6, 9, 12]  # no duplicate lines
    assert by_epoch(run) == by_epoch(whole)
    assert_same_arrays(run, whole)


def test_a_crafted_next_epoch_in_the_events_is_ignored(tmp_path):
    run = stopped_run(tmp_path)
    lines = Path(run, "events.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["schedule"]["next"] = 5070
    Path(run, "events.jsonl").write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    summary = resume(run)
    assert summary["epochs_done"] == 12 and max(e["epoch"] for e in read_events(run)) == 12


def test_a_run_being_written_cannot_be_resumed_by_a_second_process(tmp_path):
    from ibtui.rundir.store import acquire_lock

    run = stopped_run(tmp_path)
    before = snapshot(run)
    lock = acquire_lock(Path(run))  # as the writing process holds it
    try:
        result = CliRunner().invoke(app, ["resume", run, "--quiet"])
    finally:
        lock.release()
    assert result.exit_code == 2 and "being written by another process" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(run) == before


def test_two_resumes_started_together_write_each_epoch_once(tmp_path):
    run = stopped_run(tmp_path, 20, train={"epochs": 300}, schedule={"kind": "every_n", "every": 10})
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-m", "ibtui", "resume", run, "--quiet", "--json"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        time.sleep(0.02)
    results = [(p.wait(300), p.stderr.read().decode()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert len(refused.strip().splitlines()) == 1 and "another process" in refused
    epochs = [e["epoch"] for e in read_events(run)]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 300


def test_resume_drops_a_torn_last_line_before_appending(tmp_path):
    stop, on_event = stop_at(3)
    cut = execute(tiny_config(tmp_path), on_event=on_event, stop=stop)
    with open(f"{cut['run_dir']}/events.jsonl", "ab") as fh:
        fh.write(b'{"type": "measure", "epoch": 6, "pla')
    resume(cut["run_dir"])
    raw = open(f"{cut['run_dir']}/events.jsonl", "rb").read().splitlines()
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in raw)
    assert sorted(by_epoch(cut["run_dir"])) == [0, 3, 6, 9, 12]


def test_resuming_a_done_run_is_a_user_error(tmp_path):
    done = execute(tiny_config(tmp_path))
    with pytest.raises(UserError, match="already done"):
        resume(done["run_dir"])


def test_resume_command_on_a_foreign_directory_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["resume", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
