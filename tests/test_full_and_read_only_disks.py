"""Full and read-only disks for real (a small tmpfs mounted by the test; root only, skipped
otherwise with the reason): every command that writes ends with one `error:` line and a non-zero
exit, no traceback, the run's files as they were (or the run marked, where it can be), nothing lost."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import tiny_config
from ibtui.engine.runner import execute, resume
from ibtui.rundir.reader import load_run, shown_status
from ibtui.rundir.store import read_events, read_meta

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m"):
    """A fresh tmpfs of ``size`` at ``path`` (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; full and read-only disks are not tested here")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)


def fill(mount: Path) -> Path:
    """Write a filler file until the disk is full; returns it (delete it to free the space)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "filler"}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run stopped after its measured epoch 3 (of 8), with checkpoints."""
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "measure" and event["epoch"] >= 3:
            stop.set()

    summary = execute(tiny_config(tmp_path_factory.mktemp("runs"), train={"epochs": 8}), on_event=on_event, stop=stop)
    assert summary["status"] == "stopped"
    return Path(summary["run_dir"])


def ibtui(*args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "ibtui", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr


def assert_one_line_error(code: int, output: str, fragment: str) -> None:
    assert code != 0 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], output


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_analyze_that_cannot_store_its_result_fails_in_one_line_and_stores_nothing(tmp_path, stopped_run, disk):
    with tmpfs(tmp_path / "disk") as mount:
        run = mount / "run"
        shutil.copytree(stopped_run, run)
        fill(mount) if disk == "full" else read_only(mount)
        before = snapshot(run)
        code, output = ibtui("analyze", str(run), "-e", "binning", "--bins", "8,12")
        assert_one_line_error(code, output, "cannot store the analysis")
        assert snapshot(run) == before and not (run / "analysis").exists()


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_resume_on_a_disk_it_cannot_write_fails_in_one_line_and_changes_nothing(tmp_path, stopped_run, disk):
    with tmpfs(tmp_path / "disk") as mount:
        run = mount / "run"
        shutil.copytree(stopped_run, run)
        fill(mount) if disk == "full" else read_only(mount)
        before = snapshot(run)
        code, output = ibtui("resume", str(run), "--quiet")
        assert_one_line_error(code, output, "")
        assert snapshot(run) == before and read_meta(run)["status"] == "stopped"


def paused_run(runs: Path, epochs: int, pause: str) -> subprocess.Popen:
    """A real `ibtui run` (binning, every epoch measured) writing into ``runs``, returned once it
    waits (3 s) at the test pause point ``pause``; its stderr is read up to that line."""
    proc = subprocess.Popen([sys.executable, "-m", "ibtui", "run", "--set", f"train.epochs={epochs}", "--set",
                             "estimators.kde=false", "--set", "schedule.kind=every", "--device", "cpu",
                             "--runs-dir", str(runs), "--quiet"], cwd=ROOT, text=True,
                            env={**os.environ, "IBTUI_TEST_PAUSE_AT": f"{pause}:3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stderr:
        if f"ibtui-test-pause: {pause}" in line:
            break
    return proc


def test_a_disk_that_fills_during_a_run_fails_it_in_one_line_and_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "disk", size="4m") as mount:
        runs = mount / "runs"
        proc = paused_run(runs, epochs=6, pause="epoch")  # paused inside epoch 1, after epoch 0 was recorded
        filler = fill(mount)
        rest = proc.stderr.read()
        proc.wait(TIMEOUT)
        assert_one_line_error(proc.returncode, rest, "No space left")
        (run,) = list(runs.iterdir())
        assert shown_status(run, read_meta(run)) in ("failed", "killed")  # never `running`
        assert [e["epoch"] for e in read_events(run)][:1] == [0]  # what was written is kept
        filler.unlink()  # space again: the run resumes to its end
        assert resume(run)["status"] == "done"
        assert [e["epoch"] for e in read_events(run)] == list(range(7))
        assert load_run(run).meta["status"] == "done"


def test_a_disk_full_when_the_final_meta_json_is_written_never_leaves_the_run_running(tmp_path):
    """meta.json still says `running` on disk (its final write failed), but no process holds the
    run's lock: the reader, the app's list and the CLI say it is not running; resume finishes it."""
    from ibtui.tui.state import list_runs

    with tmpfs(tmp_path / "disk", size="4m") as mount:
        runs = mount / "runs"
        proc = paused_run(runs, epochs=3, pause="final")  # the final arrays written, the final meta.json not yet
        filler = fill(mount)
        rest = proc.stderr.read()
        proc.wait(TIMEOUT)
        assert_one_line_error(proc.returncode, rest, "cannot write meta.json")
        (run,) = list(runs.iterdir())
        assert read_meta(run)["status"] == "running"  # the write that failed
        assert load_run(run).status == "killed"
        assert [row["status"] for row in list_runs(runs)] == ["killed"]
        assert [e["epoch"] for e in read_events(run)] == [0, 1, 2, 3]  # every measured epoch kept
        filler.unlink()
        assert resume(run)["status"] == "done" and read_meta(run)["status"] == "done"
