"""Reliability: full disks, read-only places, concurrent runs and kills leave readable, resumable runs."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from ibtui.cli import app
from ibtui.rundir import store as store_module
from ibtui.engine.runner import execute, resume
from ibtui.rundir.store import RunStore, read_events, read_meta, read_npz
from ibtui.errors import UserError
from ibtui.tui.state import RunView


def disk_full_after(monkeypatch, n_events: int) -> None:
    """Make the store behave like a disk that fills up after ``n_events`` event lines."""
    calls = {"events": 0}
    append = RunStore.append_event

    def append_event(self, event):
        calls["events"] += 1
        if calls["events"] > n_events:
            raise OSError(errno.ENOSPC, "No space left on device")
        append(self, event)

    write_arrays = RunStore.write_arrays

    def arrays_until_full(self, name, arrays):
        if calls["events"] >= n_events:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_arrays(self, name, arrays)

    monkeypatch.setattr(RunStore, "append_event", append_event)
    monkeypatch.setattr(RunStore, "write_arrays", arrays_until_full)


def test_a_full_disk_fails_the_run_cleanly_and_keeps_what_was_written(runs_dir, monkeypatch):
    disk_full_after(monkeypatch, 2)
    summary = execute(tiny_config(runs_dir))
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    (run,) = runs_dir.iterdir()
    assert read_meta(run)["status"] == "failed"
    assert [e["epoch"] for e in read_events(run)][:1] == [0]  # what was written before the disk filled


def test_a_full_disk_even_for_meta_json_gives_no_traceback(runs_dir, monkeypatch):
    disk_full_after(monkeypatch, 1)
    real_write_meta = RunStore.write_meta

    def write_meta(self, **updates):
        if updates.get("status") in ("failed", "done", "stopped"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_meta(self, **updates)

    monkeypatch.setattr(RunStore, "write_meta", write_meta)
    summary = execute(tiny_config(runs_dir))
    assert summary["status"] == "failed" and "No space left" in summary["error"]


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch):
    disk_full_after(monkeypatch, 1)
    result = CliRunner().invoke(app, ["run", "--set", "train.epochs=4", "--set", "estimators.kde=false", "--device",
                                      "cpu", "--runs-dir", str(tmp_path), "--quiet", "--json"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        line for line in result.output.splitlines() if "No space left" in line and line.startswith("error:")]


def test_a_read_only_runs_directory_is_a_one_line_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match="Read-only file system"):
        execute(tiny_config(tmp_path / "ro"))


def test_a_run_directory_that_cannot_be_filled_is_removed(tmp_path, monkeypatch):
    def refuse(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write_bytes", refuse)
    with pytest.raises(UserError, match="No space left"):
        execute(tiny_config(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_two_runs_started_together_never_share_a_directory(tmp_path):
    args = [sys.executable, "-m", "ibtui", "run", "--set", "train.epochs=2", "--set", "estimators.kde=false",
            "--set", "preset=same", "--device", "cpu", "--runs-dir", str(tmp_path), "--quiet", "--json"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    assert all(p.wait(120) == 0 for p in procs)
    runs = list(tmp_path.iterdir())
    assert len(runs) == 3
    assert all(read_meta(r)["status"] == "done" and len(read_events(r)) > 0 for r in runs)


SOAK_SETTINGS = dict(train={"epochs": 40, "seed": 0}, schedule={"kind": "every"},
                     estimators={"binning": {"bin_size": 0.07}})


def wait_then_kill(runs: Path, rng: random.Random, ended, idle=lambda: time.sleep(0.02)) -> None:
    """Return at the instant to kill: one trial in five at a random time from the start (the run
    directory may not exist yet), the others at a random time up to 2.5 s after the run's first
    measured epoch (the whole run lasts about 3 s)."""
    if rng.random() < 0.2:
        deadline = time.monotonic() + rng.uniform(0.5, 4.0)
    else:
        limit = time.monotonic() + 120
        while not list(runs.glob("*/events.jsonl")) or not any(p.stat().st_size for p in runs.glob("*/events.jsonl")):
            if ended() or time.monotonic() > limit:
                return
            idle()
        deadline = time.monotonic() + rng.uniform(0.0, 2.5)
    while time.monotonic() < deadline and not ended():
        idle()


def kill_and_check(tmp_path: Path, rng: random.Random, reference: dict, target: str, reference_dir: str) -> int:
    """One soak trial: SIGKILL `ibtui run` or the TUI's worker process at a random instant,
    then check the run replays and resumes to the uninterrupted run's epochs. Returns 1 if a
    run directory was left to check, else 0."""
    runs = tmp_path / f"trial-{rng.random():.9f}"
    if target == "cli":
        proc = subprocess.Popen([sys.executable, "-m", "ibtui", "run", "--set", "train.epochs=40", "--set",
                                 "estimators.kde=false", "--set", "schedule.kind=every", "--device", "cpu",
                                 "--runs-dir", str(runs), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_then_kill(runs, rng, lambda: proc.poll() is not None)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    else:
        from ibtui.engine.process import start_worker

        worker = start_worker(tiny_config(runs, **SOAK_SETTINGS).to_dict())
        wait_then_kill(runs, rng, lambda: not worker.process.is_alive(),
                       lambda: worker.get(timeout=0.05))  # keep the queue drained, as the TUI does
        worker.process.kill()
        worker.process.join(30)
    found = list(runs.iterdir()) if runs.exists() else []
    if not found:
        return 0  # killed before the run directory existed: nothing to check
    (run,) = found
    raw = (run / "events.jsonl").read_bytes()
    complete = raw.count(b"\n")
    assert len(read_events(run)) == complete  # every complete line parses; at most a torn tail
    view = RunView.from_run_dir(run)
    assert len(view.epochs) == complete
    if (run / "planes.npz").exists():
        read_npz(run / "planes.npz")
    if complete and read_meta(run)["status"] != "done":
        try:
            resume(run)
        except UserError as exc:  # killed before the first checkpoint was complete
            assert "no complete checkpoint" in str(exc)
            return 1
        events = [e["epoch"] for e in read_events(run)]
        assert events == sorted(reference), "every measured epoch once, in order"
        by_epoch = {e["epoch"]: e for e in read_events(run)}
        for epoch, event in by_epoch.items():
            assert event["planes"] == reference[epoch]["planes"], epoch
        for name in ("planes.npz", "curves.npz"):  # the arrays too, curves included
            mine, theirs = read_npz(run / name), read_npz(Path(reference_dir) / name)
            assert sorted(mine) == sorted(theirs), name
            for key in theirs:
                if key != "mi_seconds":
                    np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}:{key}")
    return 1


def test_runs_killed_at_random_instants_stay_readable_and_resume_exactly(tmp_path):
    """Fast version (4 trials); `python benchmarks/kill_soak.py` runs 50 or more."""
    ref = execute(tiny_config(tmp_path / "ref", **SOAK_SETTINGS))
    reference = {e["epoch"]: e for e in read_events(ref["run_dir"])}
    rng = random.Random(int(os.environ.get("IBTUI_SOAK_SEED", "1")))
    trials = int(os.environ.get("IBTUI_SOAK_TRIALS", "4"))
    checked = sum(kill_and_check(tmp_path, rng, reference, ("cli", "worker")[i % 2], ref["run_dir"])
                  for i in range(trials))
    print(f"soak: {trials} kills, {checked} run directories checked, 0 failures")
    assert checked >= 1
