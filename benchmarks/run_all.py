"""Every performance benchmark in one command, one after the other (never side by side: the
machine's cores are shared), then one table of targets and measured figures.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results/all.json]

Runs speed.py (estimators and ensemble training vs reference-style code), workload.py (the
50-seed tishby-tanh reproduction, projected from a sample), memory.py (MNIST preset peak
memory) and tui_overhead.py (the same run in the app and headless). Each writes its own JSON
in benchmarks/results/; this script gathers them into --out with the machine's description.
``--quick`` shortens every benchmark (smoke test: figures are then rough).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run(script: str, *args: str) -> dict:
    out = RESULTS / f"{Path(script).stem}.json"
    print(f"== {script} {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args, "--out", str(out)], check=True, cwd=HERE.parent,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpu": cpu or platform.processor(), "cpus": os.cpu_count(),
            "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "all.json"))
    args = parser.parse_args()
    quick = args.quick
    speed = run("speed.py", *(["--repeats", "1", "--epochs", "5"] if quick else []))
    workload = run("workload.py", *(["--seeds", "5", "--sample-epochs", "25"] if quick else []))
    memory = run("memory.py", "--epochs", "1" if quick else "2")
    overhead = run("tui_overhead.py", *(["--epochs", "100", "--repeats", "1"] if quick else ["--repeats", "8"]))
    rows = [
        ("binning, 6 layers, N=4096: speed-up vs reference", ">= 500x", f"{speed['binning_all_layers']['speedup']}x",
         f"{speed['binning_all_layers']['ibtui_ms']} ms"),
        ("KDE upper bound, 6 layers: speed-up vs reference", ">= 50x", f"{speed['kde_upper_all_layers']['speedup']}x",
         f"{speed['kde_upper_all_layers']['ibtui_ms']} ms"),
        ("training 50 seeds together vs one at a time", ">= 10x", f"{speed['training']['speedup_per_network_epoch']}x",
         f"{speed['training']['ensemble']['network_epochs_per_s']} net-epochs/s"),
        (f"tishby-tanh, {workload['seeds']} seeds, 10k epochs, binning+KDE ({workload['how'].split()[0]})",
         "< 20 min (2 CPUs)", f"{workload['full_workload_minutes']} min",
         f"train {workload['of_which_training_minutes']} + MI {workload['of_which_measurement_minutes']} min"),
        ("MNIST preset + KDE on 10k: peak memory", "< 4096 MB", f"{memory['peak_rss_mb']} MB", memory["preset"]),
        ("live TUI vs headless, same run", "<= 10%", f"{overhead['overhead_percent']}%",
         f"{overhead['epochs']} epochs, median of {len(overhead['app_s'])} back-to-back pairs"),
    ]
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "quick": quick,
              "targets": [dict(zip(("what", "target", "measured", "detail"), r)) for r in rows],
              "speed": speed, "workload": workload, "memory": memory, "tui_overhead": overhead}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(r[0]) for r in rows)
    print(f"{report['date']} · {report['machine']['cpu']} · {report['machine']['cpus']} CPUs · "
          f"GPU {report['machine']['gpu'] or 'none'} · torch {report['machine']['torch']}")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>18}  {r[2]:>10}  {r[3]}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
