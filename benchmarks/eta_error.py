"""The ETA's error at 5%, 25% and 50% of a `quick` run, as `ibtui run` shows it.

    python benchmarks/eta_error.py [--repeats 1] [--every 0.2] [--set KEY=VALUE ...]

Runs ``python3 -m ibtui run -p quick --device cpu`` with stderr a pipe (not a terminal), so it
prints a plain progress line every ``--every`` seconds, each with the ETA by schedule. Every line
is timestamped when it arrives. At the first line at or past 5%, 25% and 50% of the epochs it
records the ETA shown and the time the run really took from there to its end (the line of its
last epoch), and, for comparison, the linear extrapolation of epochs (elapsed / epochs done ×
epochs left) that the ETA replaced. Writes benchmarks/results/eta_error.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"epoch (\d+)/(\d+) \(\d+%\).*ETA (?:(\d+):)?(\d+):(\d+)")
FRACTIONS = (0.05, 0.25, 0.5)


def eta_seconds(match: re.Match) -> float:
    hours = int(match.group(3) or 0)
    return hours * 3600 + int(match.group(4)) * 60 + int(match.group(5))


def one_run(every: float, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "ibtui", "run", "-p", "quick", "--device", "cpu", "--runs-dir", runs,
               "--progress-every", str(every), *(x for o in overrides for x in ("--set", o))]
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        started, lines = None, []
        for raw in process.stderr:
            now = time.monotonic()
            if raw.startswith("run:") and started is None:
                started = now  # the run's start event (after start-up and data preparation)
            match = LINE.search(raw)
            if match:
                lines.append((now, int(match.group(1)), int(match.group(2)), eta_seconds(match)))
        process.wait()
    if process.returncode != 0 or not lines or started is None:
        raise SystemExit(f"the run failed (exit {process.returncode})")
    end, total = lines[-1][0], lines[-1][2]
    points = []
    for fraction in FRACTIONS:
        at = next(line for line in lines if line[1] >= fraction * total)
        t, done, _, shown = at
        actual = end - t
        linear = (t - started) / done * (total - done) if done else None
        points.append({"fraction": fraction, "epoch": done, "eta_shown_s": shown, "actual_remaining_s": round(actual, 2),
                       "ratio": round(shown / actual, 3) if actual > 0 else None,
                       "linear_eta_s": round(linear, 2) if linear is not None else None,
                       "linear_ratio": round(linear / actual, 3) if linear and actual > 0 else None})
    return {"total_s": round(end - started, 2), "epochs": total, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eta_error.json"))
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        result = one_run(args.every, args.overrides)
        runs.append(result)
        for p in result["points"]:
            print(f"run {i + 1}: {p['fraction']:.0%} (epoch {p['epoch']}): ETA shown {p['eta_shown_s']:.0f} s, "
                  f"actual {p['actual_remaining_s']:.1f} s, ratio {p['ratio']}; linear {p['linear_eta_s']} s "
                  f"(ratio {p['linear_ratio']})", flush=True)
        print(f"run {i + 1}: {result['epochs']} epochs in {result['total_s']} s", flush=True)
    out = {"command": f"python3 -m ibtui run -p quick --device cpu --progress-every {args.every}"
                      + "".join(f" --set {o}" for o in args.overrides),
           "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
