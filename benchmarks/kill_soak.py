"""Kill soak: SIGKILL `ibtui run` and the TUI's worker process at random instants, many times.

    python benchmarks/kill_soak.py [--trials 50] [--seed 1]

Each trial kills a run at a random instant (1-4 s in), then checks that the run directory is
readable by replay (no torn JSON line breaks a reader, every complete epoch kept) and that
`resume` reproduces the uninterrupted run's epochs exactly. Runs the same check as the suite's
fast version (tests/test_reliability.py), with more trials; prints the counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "IBTUI_SOAK_TRIALS": str(args.trials), "IBTUI_SOAK_SEED": str(args.seed)}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                             "tests/test_reliability.py", "-k", "random_instants"], cwd=root, env=env)
    print(f"{args.trials} trials in {time.monotonic() - start:.0f} s: {'all passed' if result.returncode == 0 else 'FAILED'}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
