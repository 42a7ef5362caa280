"""Peak memory of one wide-layer estimate: N samples of a D-unit layer (issue 18's bound: 4 GB at
N = 10,000, D = 4,096). Each estimator runs in a process of its own (peak RSS from getrusage),
beside a baseline process that builds the same layer and estimates nothing.

    python benchmarks/wide_layer_memory.py [--n 10000] [--units 4096]

Prints one line per estimator: peak RSS (GB), wall time (s), and the first layer's I(X;T), I(T;Y)
in bits (a random tanh layer of distinct samples sits at its caps: log2 N and log2 10).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

ESTIMATORS = ("baseline", "renyi", "kde")


def measure(which: str, n: int, units: int) -> dict:
    """One estimate in this process: peak RSS in GB, seconds, and the planes' first layer (bits)."""
    import torch

    from ibtui.estimators import KDE, MISet, MatrixRenyi

    torch.manual_seed(0)
    layer = torch.tanh(torch.randn(n, units))
    mi_set = MISet(torch.arange(n), torch.randint(0, 10, (n,)), 10)
    started = time.perf_counter()
    if which == "renyi":
        planes = MatrixRenyi(precision="float32").estimate([layer], mi_set)
    elif which == "kde":
        planes = KDE().estimate([layer], mi_set)
    else:
        planes = {}
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"estimator": which, "peak_gb": round(peak_gb, 3), "seconds": round(seconds, 2),
            "bits": {name: [round(float(v[0]), 3) for v in plane] for name, plane in planes.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--units", type=int, default=4096)
    parser.add_argument("--one", choices=ESTIMATORS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.n, args.units)))
        return
    for which in ESTIMATORS:
        out = subprocess.run([sys.executable, __file__, "--one", which, "--n", str(args.n), "--units", str(args.units)],
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{which:9s} peak {result['peak_gb']:.2f} GB  {result['seconds']:7.1f} s  {result['bits']}")


if __name__ == "__main__":
    main()
