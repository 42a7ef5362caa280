"""`ibtui resume`: a stopped or killed run continues and produces the uninterrupted run's epochs."""

import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from ibtui.cli import app
from ibtui.engine.runner import execute, resume
from ibtui.engine.store import read_events, read_meta, read_npz
from ibtui.errors import UserError


def by_epoch(run_dir):
    """Measured epochs → event without timing fields (the last line wins, as readers do)."""
    return {e["epoch"]: {k: v for k, v in e.items() if k != "mi_seconds"} for e in read_events(run_dir)}


def stop_at(epoch):
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "measure" and event["epoch"] >= epoch:
            stop.set()

    return stop, on_event


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
