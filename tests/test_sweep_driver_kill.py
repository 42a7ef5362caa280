"""A sweep driver killed with SIGKILL takes its cell processes with it (they stop cleanly, as
for Ctrl+C), and the same command then resumes every cell to its end."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from ibtui.rundir.reader import shown_status
from ibtui.rundir.store import read_meta

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_cells_die_with_a_killed_driver_and_the_same_command_resumes_them(tmp_path):
    command = [sys.executable, "-m", "ibtui", "sweep", "-p", "quick", "--set", "train.epochs=1000", "--set",
               "schedule.kind=every_n", "--set", "schedule.every=100", "--set", "estimators.kde=false", "--set",
               "data.mi_max_samples=256", "--set", 'train.device="cpu"', "--grid", "model.activation=tanh,relu",
               "--workers", "2", "--runs-dir", str(tmp_path), "--quiet"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # both cells have measured an epoch after 0
        events = list(tmp_path.glob("*/*/events.jsonl"))
        if len(events) == 2 and all(len(p.read_text().splitlines()) >= 2 for p in events):
            break
        time.sleep(0.2)
    (root,) = tmp_path.iterdir()
    cells = sorted(p for p in root.iterdir() if p.is_dir())
    pids = [read_meta(p)["pid"] for p in cells]
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids), "a cell process outlived its driver"
    assert [shown_status(p, read_meta(p)) for p in cells] == ["stopped", "stopped"]
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert [read_meta(p)["status"] for p in cells] == ["done", "done"]
    assert all(read_meta(p)["epochs_done"] == 1000 and "resumed_from" in read_meta(p) for p in cells)
