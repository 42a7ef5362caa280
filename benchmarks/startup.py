"""Start-up times: `ibtui presets`, `ibtui --help` and the first paint of `ibtui replay` in tmux.

    python benchmarks/startup.py [--repeats 7] [--other PATH] [--run RUN_DIR]

Each command runs ``--repeats`` times; with ``--other`` (another checkout of ibtui, e.g. a git
worktree of an earlier commit) the two checkouts alternate run by run, so both are timed over the
same stretch of the machine, and the medians are reported side by side. The first paint is the
time from starting `ibtui replay RUN` in a detached tmux session (120×40) until its screen shows
the plane's axis title. Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def first_paint(checkout: Path, run_dir: Path, marker: str = "I(X;T)", limit: float = 60.0) -> float:
    session = f"ibtui-startup-{os.getpid()}"
    command = f"cd {checkout} && PYTHONPATH={checkout} {sys.executable} -m ibtui replay {run_dir}"
    start = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        while time.perf_counter() - start < limit:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            if marker in screen:
                return time.perf_counter() - start
            time.sleep(0.02)
        raise RuntimeError("the replay never painted its plane")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--other", type=Path, help="another checkout to time side by side")
    parser.add_argument("--run", type=Path, help="a run directory to replay (default: a fresh quick run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    run_dir = args.run
    if run_dir is None:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, "-m", "ibtui", "run", "-p", "quick", "--set", "train.epochs=50", "--runs-dir",
                        str(tmp), "-q"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        (run_dir,) = tmp.iterdir()
    checkouts = {"this": ROOT, **({"other": args.other.resolve()} if args.other else {})}
    cases = {"presets": [sys.executable, "-m", "ibtui", "presets"], "help": [sys.executable, "-m", "ibtui", "--help"]}
    times: dict[str, dict[str, list[float]]] = {name: {c: [] for c in cases} | {"replay_first_paint": []}
                                                 for name in checkouts}
    for _ in range(args.repeats):
        for name, checkout in checkouts.items():
            for case, cmd in cases.items():
                times[name][case].append(timed(cmd, checkout))
            times[name]["replay_first_paint"].append(first_paint(checkout, run_dir))
    report = {name: {case: {"median_s": round(statistics.median(v), 3), "runs_s": [round(x, 3) for x in v]}
                     for case, v in cases_times.items()} for name, cases_times in times.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repeats": args.repeats, "checkouts": {k: str(v) for k, v in checkouts.items()},
                                    "results": report}, indent=2) + "\n")
    for case in [*cases, "replay_first_paint"]:
        line = "  ".join(f"{name}: {report[name][case]['median_s']:.3f} s" for name in checkouts)
        print(f"{case:20s} {line}")


if __name__ == "__main__":
    main()
