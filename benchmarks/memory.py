"""Peak memory of the MNIST preset with KDE on the 10,000 test images (issue target: < 4 GB).

    python benchmarks/memory.py [--preset mnist-tanh] [--epochs 2] [--out benchmarks/results/memory.json]

MNIST itself is not downloaded: MNIST-sized IDX files (60,000 + 10,000 random 28x28 images, 10
classes) are written to a temporary directory and read by the real MNIST loader, so the data,
the 784-1024-20-20-20-10 network and the estimators (binning 0.5 and KDE on all 10,000 test
images, every layer) have MNIST's exact sizes. The run is an ordinary `ibtui run` in a child
process; its peak resident set size is the kernel's (getrusage of the waited-for child).
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from report import header, write_report


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of unsigned bytes (magic 0x08, ndim), as MNIST's."""
    prefix = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(prefix + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def fake_mnist(directory: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", 60000), ("t10k", 10000)):
        write_idx(directory / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def peak_memory(preset: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mnist"
        data.mkdir()
        fake_mnist(data)
        command = [sys.executable, "-m", "ibtui", "run", "-p", preset, "--epochs", str(epochs), "--set",
                   "schedule.kind=every", "--device", "cpu", "--data-dir", str(data), "--runs-dir", str(Path(tmp) / "runs"),
                   "--json", "--quiet"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        summary = json.loads(done.stdout)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
    return {"preset": preset, "epochs": epochs, "measured_epochs": summary["measured_epochs"],
            "n_mi": 10000, "planes": list(summary["planes"]), "peak_rss_mb": round(peak_kb / 1024, 1),
            "target_mb": 4096, "wall_seconds": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist-tanh")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/memory.json")
    args = parser.parse_args()
    report = {**header(),
              **peak_memory(args.preset, args.epochs)}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
