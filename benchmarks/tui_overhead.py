"""Live TUI overhead: the same run headless (`ibtui run`) and inside the app in a real terminal.

    python benchmarks/tui_overhead.py [--epochs 600] [--repeats 2] [--out benchmarks/results/tui_overhead.json]

The run: 12-bit task, saxe-tanh settings (Adam 4e-4, batch 256, binning 0.07 and KDE σ² = 1e-3 on
all 4096 samples, the stepped ibsgd schedule), ``--epochs`` epochs on the CPU. In the app it is
launched with `l` from the home screen of `ibtui` running in tmux (120×40) and watched live to
its end. Headless and in-app runs alternate; each run's own wall time (meta.json) is compared,
so the figure is how much the app (rendering, event handling) slows the engine beside it; the
app's own CPU time during the run (its share of one core) is reported beside it. The
headline is the median over pairs of app/headless − 1: a pair runs back to back, so the
machine's slow drifts (a noisy VM varies by ±30% from minute to minute) cancel within it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tui_latency import bench_workdir, tmux, wait_for
from report import header, write_report

PRESET = """description = "overhead benchmark: saxe-tanh settings, binning and KDE, stepped schedule"
[data]
dataset = "12bit"
[model]
widths = [10, 7, 5, 4, 3]
activation = "tanh"
[train]
optimizer = "adam"
lr = 0.0004
batch_size = 256
epochs = {epochs}
device = "cpu"
threads = {threads}
[schedule]
kind = "stepped"
[estimators.binning]
bin_size = 0.07
[estimators.kde]
noise_variance = 0.001
"""


def newest_run(runs: Path, before: set[Path]) -> Path:
    return next(p for p in runs.iterdir() if p not in before)


def wait_done(run: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            meta = json.loads((run / "meta.json").read_text())
            if meta.get("status") in ("done", "failed", "stopped"):
                return meta
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{run} did not finish in {timeout} s")


def headless(workdir: Path, env: dict) -> float:
    runs = workdir / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    subprocess.run([sys.executable, "-m", "ibtui", "run", "-p", "quick", "--quiet", "--json"], cwd=workdir, env=env,
                   check=True, capture_output=True)
    return float(wait_done(newest_run(runs, before), 10)["wall_seconds"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def app_pid(socket: str) -> int:
    """The ibtui process under the tmux pane's shell."""
    shell = int(tmux(socket, "display-message", "-p", "-t", "b", "#{pane_pid}").strip())
    for task in Path("/proc").iterdir():
        try:
            ppid = int((task / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == shell and "ibtui" in (task / "cmdline").read_text():
                return int(task.name)
        except (OSError, ValueError):
            continue
    raise SystemExit("the app's process was not found under the tmux pane")


def in_app(workdir: Path, env: dict, socket: str) -> tuple[float, float]:
    """(the run's wall seconds, the app process's own CPU seconds while it ran)."""
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    before = set(runs.iterdir())
    ibtui = shutil.which("ibtui") or f"{sys.executable} -m ibtui"
    tmux(socket, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40",
         f"cd {workdir} && env IBTUI_CONFIG_DIR={env['IBTUI_CONFIG_DIR']} TERM=xterm-256color {ibtui}; sleep 600")
    try:
        wait_for(socket, r"Presets")
        pid = app_pid(socket)
        start = cpu_seconds(pid)
        tmux(socket, "send-keys", "-t", "b", "l")
        wait_for(socket, r"running · epoch \d+/")
        meta = wait_done(newest_run(runs, before), 3600)
        app_cpu = cpu_seconds(pid) - start
    finally:
        tmux(socket, "kill-server")
    return float(meta["wall_seconds"]), app_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="train.threads of the run (0: the engine's default)")
    parser.add_argument("--out", default="benchmarks/results/tui_overhead.json")
    args = parser.parse_args()
    workdir = bench_workdir("ibtui-overhead-", PRESET.format(epochs=args.epochs, threads=args.threads))
    env = {**os.environ, "IBTUI_CONFIG_DIR": str(workdir / "config")}
    socket = f"ibtui-overhead-{os.getpid()}"
    times: dict[str, list[float]] = {"headless": [], "app": []}
    app_cpu: list[float] = []
    try:
        for _ in range(args.repeats):
            times["headless"].append(headless(workdir, env))
            wall, cpu = in_app(workdir, env, socket)
            times["app"].append(wall)
            app_cpu.append(cpu)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    h, a = statistics.median(times["headless"]), statistics.median(times["app"])
    pairs = [100 * (app / head - 1) for head, app in zip(times["headless"], times["app"])]
    report = {**header(),
              "epochs": args.epochs, "threads": args.threads, "headless_s": times["headless"], "app_s": times["app"],
              "pair_overheads_percent": [round(v, 1) for v in pairs],
              "overhead_percent": round(statistics.median(pairs), 1),
              "ratio_of_medians_percent": round(100 * (a / h - 1), 1), "target_percent": 10,
              "app_cpu_s": [round(v, 2) for v in app_cpu],
              "app_cpu_percent_of_one_core": round(100 * statistics.median(c / w for c, w in zip(app_cpu, times["app"])), 1)}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
