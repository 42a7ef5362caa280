"""ibtui from Python, as in a notebook: run a preset, read the run back, tabulate, plot.

    python examples/notebook_api.py [--runs-dir runs] [--out plane.png]

Needs the notebook and plot extras: pip install 'ibtui[notebook,plot]'.
"""

from __future__ import annotations

import argparse

import ibtui
from ibtui.config import load_preset
from ibtui.engine.runner import execute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", default="plane.png")
    args = parser.parse_args()
    summary = execute(load_preset("quick", ["train.epochs=60", "estimators.kde=false", "train.seeds=3",
                                            f'store.runs_dir="{args.runs_dir}"']))
    run = ibtui.load_run(summary["run_dir"])  # the one reader: validated, no torch needed
    frame = run.to_frame()  # plane, layer, epoch, member, ixt_bits, ity_bits
    last = frame[frame.epoch == frame.epoch.max()]
    print(last.groupby("layer", sort=False)[["ixt_bits", "ity_bits"]].agg(["mean", "std"]).round(2))
    plane = run.plane("binning")  # arrays: epochs (E,), ixt (E, S, L), ixt_mean (E, L)
    print(f"{len(plane.epochs)} epochs, {plane.members} networks, {len(run.layers)} layers")
    figure = ibtui.figures.information_plane(run, plane="binning")
    print(ibtui.figures.save(figure, args.out))


if __name__ == "__main__":
    main()
