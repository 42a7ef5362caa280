"""The full reproduction's cost: tishby-tanh with 50 seeds, 10,000 epochs, binning and KDE at the
ibsgd ("stepped") epoch schedule (issue target: under 20 minutes on 2 CPU cores).

    python benchmarks/workload.py [--seeds 50] [--sample-epochs 12] [--device cpu] [--out ...]

Runs the real workload (``ibtui run -p tishby-tanh --seeds 50 --set schedule.kind=stepped
--set estimators.kde.noise_variance=1e-3``) for ``--sample-epochs`` epochs (default 12: 13 measured) and splits its wall
time into training and measurement with the run's own events (``mi_seconds`` per measured
epoch). The full run's time is then projected: training per epoch × 10,000 plus the mean
measurement time × the stepped schedule's number of measured epochs in 10,000. ``--full`` runs
the whole workload instead and reports its measured wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ibtui.engine.schedule import static_epochs
from ibtui.engine.store import read_events, read_meta

from report import header, write_report

EPOCHS = 10000


def run(seeds: int, epochs: int, device: str, runs: Path) -> tuple[dict, list[dict]]:
    command = [sys.executable, "-m", "ibtui", "run", "-p", "tishby-tanh", "--seeds", str(seeds), "--epochs", str(epochs),
               "--set", "schedule.kind=stepped", "--set", "estimators.kde.noise_variance=1e-3", "--device", device,
               "--runs-dir", str(runs), "--quiet", "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    run_dir = Path(json.loads(done.stdout)["run_dir"])
    return read_meta(run_dir), read_events(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--sample-epochs", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="run all 10,000 epochs instead of projecting")
    parser.add_argument("--out", default="benchmarks/results/workload.json")
    args = parser.parse_args()
    epochs = EPOCHS if args.full else args.sample_epochs
    with tempfile.TemporaryDirectory() as tmp:
        meta, events = run(args.seeds, epochs, args.device, Path(tmp))
    wall = float(meta["wall_seconds"])
    measures = [e for e in events if "mi_seconds" in e]
    mi = sum(float(e["mi_seconds"]) for e in measures)
    train_per_epoch = (wall - mi) / epochs
    mi_per_measure = mi / len(measures)
    n_measured = len(static_epochs("stepped", EPOCHS))
    projected = train_per_epoch * EPOCHS + mi_per_measure * n_measured
    report = {
        **header(),
        "device": meta.get("device"), "seeds": args.seeds, "epochs_run": epochs, "wall_seconds": round(wall, 1),
        "train_seconds_per_epoch": round(train_per_epoch, 4), "measure_seconds_per_measured_epoch": round(mi_per_measure, 3),
        "measured_epochs_in_10000": n_measured,
        "full_workload_minutes": round((wall if args.full else projected) / 60, 1),
        "how": "measured" if args.full else "projected from the sample's training and measurement times",
        "of_which_training_minutes": round(train_per_epoch * EPOCHS / 60, 1),
        "of_which_measurement_minutes": round(mi_per_measure * n_measured / 60, 1),
        "target_minutes_2_cpus": 20, "target_seconds_h100": 60,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
