"""The full reproduction's cost: tishby-tanh with 50 seeds, 10,000 epochs, binning and KDE at the
ibsgd ("stepped") epoch schedule (issue target: under 20 minutes on 2 CPU cores).

    python benchmarks/workload.py [--seeds 50] [--sample-epochs 25] [--device cpu] [--precision float32] [--full] [--out ...]

Runs the real workload through the engine (``execute``, the code behind ``ibtui run -p
tishby-tanh --seeds 50 --set schedule.kind=stepped --set estimators.kde.noise_variance=1e-3
--set estimators.kde.precision=float32``: ibsgd's σ² and its float32 arithmetic; ``--precision
float64`` for ibtui's default) for ``--sample-epochs`` epochs and times its events as they arrive. An epoch's training time runs from
the previous event to its ``epoch`` event (training and the test-set evaluation); a measured
epoch's measurement time from its ``epoch`` event to its ``measure`` event (every estimator on all
members, the evaluations and writing the record and checkpoint). The full run's time is
projected as mean training time × 10,000 + mean measurement time × the stepped schedule's
number of measured epochs in 10,000 (the sample's first epochs are all measured, so its own
wall time over-weights measurement). ``--full`` runs all 10,000 epochs and reports its wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ibtui.config import load_preset
from ibtui.engine.runner import execute
from ibtui.config import ScheduleConfig
from ibtui.engine.schedule import static_epochs

from report import header, write_report

EPOCHS = 10000
SETTINGS = ['schedule.kind="stepped"', "estimators.kde.noise_variance=1e-3"]


def timed_run(settings: list[str], runs: Path) -> tuple[dict, list[float], list[float]]:
    """Run the workload; (summary, training seconds per trained epoch, measurement seconds per measured epoch)."""
    cfg = load_preset("tishby-tanh", settings)
    train_s, measure_s = [], []
    last = {"time": time.perf_counter(), "epoch_at": None}

    def on_event(event: dict) -> None:
        now = time.perf_counter()
        if event.get("type") == "epoch":
            train_s.append(now - last["time"])
            last["epoch_at"] = now
        elif event.get("type") == "measure" and last["epoch_at"] is not None:
            measure_s.append(now - last["epoch_at"])
            last["epoch_at"] = None
        last["time"] = now

    summary = execute(cfg, on_event=on_event, runs_dir=runs)
    if summary.get("status") != "done":
        raise SystemExit(f"workload run ended {summary.get('status')}: {summary.get('error')}")
    return summary, train_s, measure_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--sample-epochs", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("float32", "float64"), default="float32",
                        help="KDE precision (float32: ibsgd's own)")
    parser.add_argument("--full", action="store_true", help="run all 10,000 epochs instead of projecting")
    parser.add_argument("--out", default="benchmarks/results/workload.json")
    args = parser.parse_args()
    epochs = EPOCHS if args.full else args.sample_epochs
    with tempfile.TemporaryDirectory() as tmp:
        settings = [*SETTINGS, f'estimators.kde.precision="{args.precision}"', f"train.seeds={args.seeds}",
                    f"train.epochs={epochs}", f'train.device="{args.device}"']
        summary, train_s, measure_s = timed_run(settings, Path(tmp))
    wall = float(summary["wall_seconds"])
    train_per_epoch = statistics.mean(train_s)
    measure_per_epoch = statistics.mean(measure_s)
    n_measured = sum(1 for _ in static_epochs(ScheduleConfig(kind="stepped"), EPOCHS))
    projected = train_per_epoch * EPOCHS + measure_per_epoch * n_measured
    report = {
        **header(),
        "device": summary.get("device", args.device), "seeds": args.seeds, "epochs_run": epochs,
        "settings": settings, "wall_seconds": round(wall, 1), "test_acc": summary.get("test_acc"),
        "train_seconds_per_epoch": round(train_per_epoch, 4),
        "measure_seconds_per_measured_epoch": round(measure_per_epoch, 3),
        "measured_epochs_in_10000": n_measured,
        "full_workload_minutes": round((wall if args.full else projected) / 60, 1),
        "how": "measured" if args.full else "projected from the sample's per-epoch training and measurement times",
        "of_which_training_minutes": round(train_per_epoch * EPOCHS / 60, 1),
        "of_which_measurement_minutes": round(measure_per_epoch * n_measured / 60, 1),
        "target_minutes_2_cpus": 20, "target_seconds_h100": 60,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
