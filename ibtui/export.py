"""Exporting runs: CSV of a plane's coordinates, and figures through ``ibtui.figures``.

Shared by ``ibtui export`` and the app's ``e`` key. CSV needs nothing; figures need matplotlib
(``pip install 'ibtui[plot]'``): without it they are skipped and the result says so.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ibtui.errors import UserError
from ibtui.rundir.reader import Run
from ibtui.rundir.store import atomic_write_bytes

FIGURE_FORMATS = ("png", "pdf", "svg")
FORMATS = ("csv", *FIGURE_FORMATS)
KINDS = ("plane", "multiples", "curves", "snr")
CSV_HEADER = ("plane", "layer", "layer_index", "epoch", "member", "ixt_bits", "ity_bits")


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def safe_name(name: str) -> str:
    """A file-name fragment of ``name`` (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "run"


def plane_csv(run: Run, plane: str) -> bytes:
    """One row per epoch, layer and member (member 0 for a single network), exact numbers (repr)."""
    data = run.plane(plane)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for e, epoch in enumerate(data.epochs):
        for layer, name in enumerate(data.layers):
            for member in range(data.members):
                writer.writerow([plane, name, layer, int(epoch), member, repr(float(data.members_ixt[e, member, layer])),
                                 repr(float(data.members_ity[e, member, layer]))])
    return buffer.getvalue().encode()


def run_export_dir(run: Run) -> Path:
    """``<run>/export``, the default place of a run's exports: refused (UserError) when it is a
    symlink or anything but a directory, so a run directory from someone else cannot send our
    files elsewhere."""
    path = run.path / "export"
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UserError(f"{path} is not a plain directory; refusing to write there (give --out)")
    return path


@dataclass
class Exported:
    """What an export wrote, and what it skipped (with the reason and how to get it)."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def export(runs: Sequence[Run], out: str | Path, kind: str = "plane", plane: str | None = None,
           formats: Sequence[str] = FORMATS, by: str = "plane", layers: Sequence[int] | None = None,
           stem: str | None = None, until: int | None = None,
           limits: tuple[tuple[float, float] | None, tuple[float, float] | None] | None = None) -> Exported:
    """Write the figure ``kind`` of ``runs`` (and the CSV of ``plane`` for ``kind="plane"``) into the
    directory ``out`` as ``<stem>.<format>``; UserError for a bad request or a write that fails.
    For ``kind="plane"``, ``until`` (the measured epochs up to it) and ``limits`` (x and y ranges in
    bits) draw the figure as the app shows it; the CSV keeps every epoch."""
    if kind not in KINDS:
        raise UserError(f"export kind must be one of {', '.join(KINDS)}; got {kind!r}")
    wanted = list(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    bad = [f for f in wanted if f not in FORMATS]
    if bad:
        raise UserError(f"unknown export format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    if not runs:
        raise UserError("nothing to export")
    for run in runs:
        if plane is not None and plane not in run.planes:
            raise UserError(f"{run.id} has no plane {plane!r}; it has: {', '.join(run.planes) or 'none'}")
    if kind == "plane":
        name = plane or (runs[0].planes[0] if runs[0].planes else None)
        if name is None or not len(runs[0].plane(name).epochs):
            raise UserError(f"{runs[0].id}: nothing to export yet (no measured epochs)")
        plane = name
    stem = stem or "-".join([*(safe_name(r.id) for r in runs[:3]), safe_name(kind if kind != "plane" else plane)])
    directory = Path(out)
    result = Exported()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if "csv" in wanted:
            if kind == "plane" and len(runs) == 1:
                path = directory / f"{stem}.csv"
                atomic_write_bytes(path, plane_csv(runs[0], plane))
                result.paths.append(path)
            else:
                result.skipped.append("csv (only for one run's plane)")
        figures = [f for f in wanted if f in FIGURE_FORMATS]
        if figures and not have_matplotlib():
            result.skipped.append(f"{', '.join(figures)} (figures need matplotlib: pip install 'ibtui[plot]')")
        elif figures:
            from ibtui import figures as fig_module

            if kind == "plane":
                figure = fig_module.information_plane(list(runs), plane=plane, layers=layers, until=until,
                                                      limits=limits)
            elif kind == "multiples":
                figure = fig_module.small_multiples(list(runs), by=by, plane=plane)
            elif kind == "curves":
                figure = fig_module.training_curves(runs[0])
            else:
                figure = fig_module.gradient_snr(runs[0])
            for fmt in figures:
                result.paths.append(fig_module.save(figure, directory / f"{stem}.{fmt}", fmt))
    except OSError as exc:
        raise UserError(f"cannot write the export to {directory}: {exc.strerror or exc}") from None
    return result
