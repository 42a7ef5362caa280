"""TUI responsiveness while a run streams, measured in a real terminal (tmux).

    python benchmarks/tui_latency.py [--keys 20] [--out benchmarks/results/tui_latency.json]

Starts `ibtui` in tmux (120×40), launches a 12-bit run that measures binning at every epoch
(the highest event rate the engine produces), then presses `p` (switch estimator) repeatedly
and times how long until the screen shows the new estimator. Also times one redraw of the
plane (plotext build + ANSI parsing) at the pane's plane size for the run's final data, and
saves captures of the live screen at 80×24 and 200×60. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = """description = "latency benchmark: 12-bit, binning at every epoch"
[train]
epochs = 1000000
device = "cpu"
[schedule]
kind = "every"
[estimators.binning]
bin_size = 0.07
[estimators.binning_fixed]
bins = 30
"""


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30).stdout


def wait_for(socket: str, pattern: str, timeout: float = 60.0, poll: float = 0.005) -> tuple[re.Match, float]:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        match = re.search(pattern, tmux(socket, "capture-pane", "-p", "-t", "b"))
        if match:
            return match, time.perf_counter() - start
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {pattern!r}:\n{tmux(socket, 'capture-pane', '-p', '-t', 'b')}")


def bench_workdir(prefix: str, preset: str) -> Path:
    """A scratch folder whose config holds ``preset`` as the "quick" preset (the app's `l` launches it);
    exits with a message when tmux is missing."""
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed")
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "config" / "presets").mkdir(parents=True)
    (workdir / "config" / "presets" / "quick.toml").write_text(preset)
    return workdir


def session(socket: str, workdir: Path, size: tuple[int, int]) -> None:
    ibtui = shutil.which("ibtui") or f"{sys.executable} -m ibtui"
    env = f"IBTUI_CONFIG_DIR={workdir / 'config'} TERM=xterm-256color"
    tmux(socket, "new-session", "-d", "-s", "b", "-x", str(size[0]), "-y", str(size[1]),
         f"cd {workdir} && env {env} {ibtui}; sleep 600")
    wait_for(socket, r"Presets")
    tmux(socket, "send-keys", "-t", "b", "l")
    wait_for(socket, r"running · epoch \d+/")
    wait_for(socket, r"binning · epoch \d+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/tui_latency.json")
    args = parser.parse_args()
    workdir = bench_workdir("ibtui-bench-", PRESET)
    socket = f"ibtui-bench-{os.getpid()}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(),
                    "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        session(socket, workdir, (120, 40))
        time.sleep(3)  # let the stream reach full speed
        latencies = []
        planes = ["binning_fixed", "binning"]
        for i in range(args.keys):
            tmux(socket, "send-keys", "-t", "b", "p")
            _, waited = wait_for(socket, rf"estimator {planes[i % 2]}\b")
            latencies.append(waited)
            time.sleep(0.2)
        rate = float(wait_for(socket, r"([\d,.]+) ep/s")[0].group(1).replace(",", ""))
        report["key_latency_ms"] = {"median": round(1000 * statistics.median(latencies), 1),
                                    "max": round(1000 * max(latencies), 1), "n": len(latencies)}
        report["epochs_per_second_while_measuring_every_epoch"] = rate
        for size in ((80, 24), (200, 60)):
            tmux(socket, "resize-window", "-t", "b", "-x", str(size[0]), "-y", str(size[1]))
            time.sleep(1.5)
            capture = tmux(socket, "capture-pane", "-p", "-t", "b")
            (out.parent / f"live_{size[0]}x{size[1]}.txt").write_text(capture)
        tmux(socket, "send-keys", "-t", "b", "s")
        wait_for(socket, r"stopped · epoch")
        idle = []
        for i in range(args.keys):  # the same key once nothing streams: the terminal's own floor
            tmux(socket, "send-keys", "-t", "b", "p")
            _, waited = wait_for(socket, rf"estimator {planes[(i + args.keys) % 2]}\b")
            idle.append(waited)
            time.sleep(0.1)
        report["key_latency_idle_ms"] = {"median": round(1000 * statistics.median(idle), 1),
                                         "max": round(1000 * max(idle), 1), "n": len(idle)}
    finally:
        tmux(socket, "kill-server")

    from rich.text import Text

    from ibtui.tui.plots import plane_figure
    from ibtui.tui.state import RunView

    (run,) = (workdir / "runs").iterdir()
    view = RunView.from_run_dir(run)
    timings = []
    for _ in range(10):
        start = time.perf_counter()
        Text.from_ansi(plane_figure(view, "binning", 78, 33))
        timings.append(time.perf_counter() - start)
    report["redraw_ms"] = {"points": len(view.epochs) * len(view.layers),
                           "median": round(1000 * statistics.median(timings), 1),
                           "max": round(1000 * max(timings), 1)}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
