"""Stop signals at every phase of a run: the directory ends `stopped`, `failed` or `done` (never
`running` after the process exited), no traceback, and the run resumes to the uninterrupted run.

Real `ibtui` processes; the instant is chosen with the test hook ``IBTUI_TEST_PAUSE_AT``
(``ibtui.engine.signals.pause_point``): the run prints ``ibtui-test-pause: <phase>`` and waits
there, and the test sends its signal(s) then.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ibtui.config import load_preset
from ibtui.engine.runner import execute, resume
from ibtui.rundir.store import read_events, read_meta, read_npz

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train.epochs=4", "estimators.kde=false", "schedule.kind=every", "data.mi_max_samples=512",
            "train.threads=1", "train.device=\"cpu\""]
OVERRIDES = [arg for item in SETTINGS for arg in ("--set", item)]
TIMEOUT = 120  # seconds for any one process (a loaded 2-core machine imports torch in several)


def _signals_default() -> None:
    """The child starts with SIGINT/SIGHUP at their defaults, whatever this process ignores."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class Ibtui:
    """An `ibtui` process whose stderr lines are collected as they come."""

    def __init__(self, args: list[str], pause: str = "") -> None:
        env = {**os.environ, "IBTUI_TEST_PAUSE_AT": pause}
        self.proc = subprocess.Popen([sys.executable, "-m", "ibtui", *args], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_signals_default)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str) -> None:
        """Block until a stderr line holds ``text`` (fails on exit or timeout)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited before '{text}':\n{''.join(self.err)}"
                continue
            self.err.append(line)
            if text in line:
                return
        pytest.fail(f"no '{text}' within {TIMEOUT} s")

    def signal(self, *sigs: int) -> None:
        for sig in sigs:
            self.proc.send_signal(sig)

    def finish(self) -> tuple[int, str]:
        """Exit code and the whole stderr."""
        self.proc.wait(TIMEOUT)
        time.sleep(0.1)
        while not self.lines.empty():
            self.err.append(self.lines.get())
        return self.proc.returncode, "".join(self.err)


def run_args(runs: Path) -> list[str]:
    return ["run", *OVERRIDES, "--runs-dir", str(runs), "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run of the same settings (in this process)."""
    cfg = load_preset("quick", [*SETTINGS, f"store.runs_dir=\"{tmp_path_factory.mktemp('reference')}\""])
    return Path(execute(cfg)["run_dir"])


def only_run(runs: Path) -> Path:
    (run,) = list(runs.iterdir())
    return run


def assert_clean_stop(code: int, err: str, run: Path, status: str = "stopped", exit_code: int = 130) -> None:
    assert "Traceback" not in err, err
    assert code == exit_code, err
    assert read_meta(run)["status"] == status


def assert_resumes_to(run: Path, reference: Path) -> None:
    """`resume` ends the run exactly as the uninterrupted one: events, planes.npz, curves.npz."""
    assert resume(run)["status"] == "done"

    def events(path: Path) -> dict:
        return {e["epoch"]: {k: v for k, v in e.items() if k != "mi_seconds"} for e in read_events(path)}

    assert events(run) == events(reference)
    for name in ("planes.npz", "curves.npz"):
        mine, theirs = read_npz(run / name), read_npz(reference / name)
        assert sorted(mine) == sorted(theirs), name
        for key in theirs:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}:{key}")


def test_a_stop_signal_before_the_run_directory_exists_leaves_nothing(tmp_path):
    ibtui = Ibtui(run_args(tmp_path / "runs"), pause="before-create")
    ibtui.wait_for("ibtui-test-pause: before-create")
    ibtui.signal(signal.SIGTERM)
    code, err = ibtui.finish()
    assert code == 130 and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("phase, sig", [("created", signal.SIGINT), ("epoch", signal.SIGHUP),
                                        ("measure", signal.SIGTERM)])
def test_a_stop_signal_at_each_phase_of_a_run_ends_it_stopped_and_resumable(tmp_path, reference, phase, sig):
    runs = tmp_path / "runs"
    ibtui = Ibtui(run_args(runs), pause=f"{phase}:2")
    ibtui.wait_for(f"ibtui-test-pause: {phase}")
    ibtui.signal(sig)
    code, err = ibtui.finish()
    run = only_run(runs)
    assert_clean_stop(code, err, run)
    assert_resumes_to(run, reference)


def test_a_stop_signal_during_a_checkpoint_write_keeps_that_epochs_event_and_resumes(tmp_path, reference):
    runs = tmp_path / "runs"
    ibtui = Ibtui(run_args(runs), pause="checkpoint:2")
    ibtui.wait_for("ibtui-test-pause: checkpoint")
    ibtui.signal(signal.SIGTERM)
    code, err = ibtui.finish()
    run = only_run(runs)
    assert_clean_stop(code, err, run)
    assert [e["epoch"] for e in read_events(run)] == [0]  # the checkpoint's event line was written too
    assert_resumes_to(run, reference)


def test_a_second_signal_while_stopping_still_ends_the_run_stopped(tmp_path, reference):
    runs = tmp_path / "runs"
    ibtui = Ibtui(run_args(runs), pause="epoch:5,final:2")
    ibtui.wait_for("ibtui-test-pause: epoch")
    ibtui.signal(signal.SIGTERM)
    ibtui.wait_for("ibtui-test-pause: final")  # the clean stop is writing the final files
    ibtui.signal(signal.SIGTERM, signal.SIGINT)
    code, err = ibtui.finish()
    run = only_run(runs)
    assert_clean_stop(code, err, run)
    assert_resumes_to(run, reference)


def test_a_signal_during_the_final_writes_of_a_finished_run_leaves_it_done(tmp_path):
    runs = tmp_path / "runs"
    ibtui = Ibtui(run_args(runs), pause="final:2")
    ibtui.wait_for("ibtui-test-pause: final")
    ibtui.signal(signal.SIGTERM)
    code, err = ibtui.finish()
    run = only_run(runs)
    assert_clean_stop(code, err, run, status="done", exit_code=0)


def test_a_stop_signal_while_a_resume_reopens_the_run_ends_it_stopped_and_resumable(tmp_path, reference):
    runs = tmp_path / "runs"
    first = Ibtui(run_args(runs), pause="checkpoint:2")
    first.wait_for("ibtui-test-pause: checkpoint")
    first.signal(signal.SIGTERM)
    assert first.finish()[0] == 130
    run = only_run(runs)
    again = Ibtui(["resume", str(run), "--quiet"], pause="resume-opened:2")
    again.wait_for("ibtui-test-pause: resume-opened")
    again.signal(signal.SIGHUP)
    code, err = again.finish()
    assert_clean_stop(code, err, run)
    assert_resumes_to(run, reference)


def test_a_terminated_app_worker_leaves_its_run_stopped(tmp_path, monkeypatch):
    from ibtui.engine.process import start_worker

    monkeypatch.setenv("IBTUI_TEST_PAUSE_AT", "epoch:5")
    cfg = load_preset("quick", [*SETTINGS, f"store.runs_dir=\"{tmp_path / 'runs'}\""])
    worker = start_worker(cfg.to_dict())
    deadline = time.monotonic() + TIMEOUT
    while not list((tmp_path / "runs").glob("*/events.jsonl")) and time.monotonic() < deadline:
        worker.get(timeout=0.1)
    worker.process.terminate()  # SIGTERM, as Worker.shutdown does when asking did not help
    worker.process.join(TIMEOUT)
    assert read_meta(only_run(tmp_path / "runs"))["status"] == "stopped"


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3, 1.0])
def test_sigint_while_the_cli_is_still_loading_exits_130_without_a_traceback(tmp_path, delay):
    """From the instant the `ibtui` command starts (before that, the interpreter's own start-up)."""
    ibtui = Ibtui(["run", *OVERRIDES, "--runs-dir", str(tmp_path), "--quiet"], pause="loading:0")
    ibtui.wait_for("ibtui-test-pause: loading")
    time.sleep(delay)  # within the imports (typer, rich, then torch) on any machine
    ibtui.proc.send_signal(signal.SIGINT)
    code, err = ibtui.finish()
    assert "Traceback" not in err, err[-2000:]
    assert code in (130, -signal.SIGINT), err[-500:]  # a shell shows both as 130 (see ibtui/__main__.py)
    assert all(read_meta(run)["status"] != "running" for run in tmp_path.iterdir())
