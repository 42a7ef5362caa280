"""Export one information plane of a run as CSV, SVG (hand-written) and PNG (matplotlib, optional).

Pure Python, no Textual and no plotext: the CLI and the TUI both call :func:`export_plane`.
Every file is written atomically (temp file in the same directory, then rename).
Colours: points are coloured by epoch on a log1p scale along a viridis-like ramp
(:func:`epoch_colour`), the same convention as the terminal plots.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape, quoteattr

from ibtui.engine.store import atomic_write_bytes
from ibtui.errors import UserError
from ibtui.tui.state import RunView

FORMATS = ("csv", "svg", "png")
CSV_HEADER = ("plane", "layer", "layer_index", "epoch", "ixt_bits", "ity_bits")

# A viridis-like ramp, dark (early epochs) to bright (late epochs): evenly spaced RGB stops.
RAMP: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
    (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
)
DARK = "#222222"


# ---------------------------------------------------------------------- colours
def epoch_position(epoch: int, first: int, last: int) -> float:
    """Position of ``epoch`` in [0, 1] between ``first`` and ``last`` on a log1p scale.

    A single measured epoch (``last <= first``) sits at the end of the ramp.
    """
    if last <= first:
        return 1.0
    offset = min(max(epoch, first), last) - first
    return math.log1p(offset) / math.log1p(last - first)


def ramp_at(fraction: float) -> tuple[int, int, int]:
    """Colour at ``fraction`` ∈ [0, 1] along :data:`RAMP`, linearly interpolated between stops."""
    if not math.isfinite(fraction):
        fraction = 0.0
    fraction = min(1.0, max(0.0, fraction))
    scaled = fraction * (len(RAMP) - 1)
    i = min(int(scaled), len(RAMP) - 2)
    t = scaled - i
    a, b = RAMP[i], RAMP[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * t) for k in range(3))  # type: ignore[return-value]


def epoch_colour(epoch: int, first: int, last: int) -> tuple[int, int, int]:
    """RGB colour of ``epoch`` for a run measured from ``first`` to ``last`` (log1p scale).

    ``first`` gives the first ramp stop, ``last`` the last one; epochs outside are clamped.
    """
    return ramp_at(epoch_position(epoch, first, last))


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# ---------------------------------------------------------------------- data
class _Plane:
    """The points of one plane, ready to draw: per-layer trajectories in epoch order."""

    def __init__(self, view: RunView, plane: str) -> None:
        points = view.planes.get(plane, {})
        self.plane = plane
        self.run_id = str(view.meta.get("id") or "run")
        self.epochs = sorted(points)
        self.first, self.last = self.epochs[0], self.epochs[-1]
        n = max(len(points[e][0]) for e in self.epochs)
        self.layers = [view.layers[i] if i < len(view.layers) else f"layer {i + 1}" for i in range(n)]
        # rows: (layer index, epoch, ixt, ity) in epoch order, then layer order
        self.rows = [(i, e, points[e][0][i], points[e][1][i])
                     for e in self.epochs for i in range(min(len(points[e][0]), len(points[e][1])))]
        self.h_x, self.h_y = _finite(view.h_x), _finite(view.h_y)

    def trajectory(self, layer: int) -> list[tuple[int, float, float]]:
        """(epoch, ixt, ity) of one layer, finite points only, in epoch order."""
        return [(e, x, y) for i, e, x, y in self.rows if i == layer and _ok(x) and _ok(y)]

    def last_points(self) -> list[tuple[float, float]]:
        return [(x, y) for i, e, x, y in self.rows if e == self.last and _ok(x) and _ok(y)]

    def limits(self) -> tuple[float, float]:
        xs = [x for _, _, x, y in self.rows if _ok(x) and _ok(y)]
        ys = [y for _, _, x, y in self.rows if _ok(x) and _ok(y)]
        x_max = max([self.h_x or 0.0, *xs, 0.0])
        y_max = max([self.h_y or 0.0, *ys, 0.0])
        return (x_max if x_max > 0 else 1.0), (y_max if y_max > 0 else 1.0)

    def title(self) -> str:
        return f"{self.run_id} · {self.plane} information plane"


def _ok(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _nice_ticks(high: float, target: int = 6) -> list[float]:
    """Round tick values from 0 to ``high`` (inclusive where it lands on a tick)."""
    raw = high / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = int(math.floor(high / step + 1e-9))
    return [round(k * step, 10) for k in range(count + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}"


# ---------------------------------------------------------------------- CSV
def _csv_bytes(data: _Plane) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for i, e, x, y in data.rows:
        writer.writerow((data.plane, data.layers[i], i, e, repr(float(x)), repr(float(y))))
    return buf.getvalue().encode("utf-8")


# ---------------------------------------------------------------------- SVG
W, H = 720, 540
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 50, 60


def _svg_bytes(data: _Plane) -> bytes:
    x_max, y_max = data.limits()
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return round(LEFT + pw * v / x_max, 2)

    def sy(v: float) -> float:
        return round(TOP + ph * (1 - v / y_max), 2)

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="12">',
        f"<title>{escape(data.title())}</title>",
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT + pw / 2}" y="{TOP / 2 + 4}" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(data.title())}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="{DARK}"/>',
    ]
    # ticks, grid and axis labels
    out.append('<g class="axes" stroke="#dddddd">')
    for t in _nice_ticks(x_max):
        out.append(f'<line x1="{sx(t)}" y1="{TOP}" x2="{sx(t)}" y2="{TOP + ph}"/>')
    for t in _nice_ticks(y_max):
        out.append(f'<line x1="{LEFT}" y1="{sy(t)}" x2="{LEFT + pw}" y2="{sy(t)}"/>')
    out.append("</g>")
    out.append(f'<g class="ticks" fill="{DARK}">')
    for t in _nice_ticks(x_max):
        out.append(f'<line x1="{sx(t)}" y1="{TOP + ph}" x2="{sx(t)}" y2="{TOP + ph + 5}" stroke="{DARK}"/>')
        out.append(f'<text x="{sx(t)}" y="{TOP + ph + 18}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _nice_ticks(y_max):
        out.append(f'<line x1="{LEFT - 5}" y1="{sy(t)}" x2="{LEFT}" y2="{sy(t)}" stroke="{DARK}"/>')
        out.append(f'<text x="{LEFT - 8}" y="{sy(t) + 4}" text-anchor="end">{_fmt(t)}</text>')
    out.append("</g>")
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 18}" text-anchor="middle">'
               f'{escape("I(X;T) [bits]")}</text>')
    out.append(f'<text x="18" y="{TOP + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {TOP + ph / 2})">{escape("I(T;Y) [bits]")}</text>')
    # entropies: the ceilings of both axes
    if data.h_x is not None:
        out.append(f'<line class="h-x" x1="{sx(data.h_x)}" y1="{TOP}" x2="{sx(data.h_x)}" y2="{TOP + ph}" '
                   f'stroke="#888888" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{sx(data.h_x) - 4}" y="{TOP + 14}" text-anchor="end" fill="#666666">'
                   f'{escape(f"H(X)={data.h_x:.3g}")}</text>')
    if data.h_y is not None:
        out.append(f'<line class="h-y" x1="{LEFT}" y1="{sy(data.h_y)}" x2="{LEFT + pw}" y2="{sy(data.h_y)}" '
                   f'stroke="#888888" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{LEFT + 4}" y="{sy(data.h_y) - 4}" fill="#666666">'
                   f'{escape(f"H(Y)={data.h_y:.3g}")}</text>')
    # trajectories: a grey polyline per layer, points coloured by epoch
    for i, name in enumerate(data.layers):
        traj = data.trajectory(i)
        coords = " ".join(f"{sx(x)},{sy(y)}" for _, x, y in traj)
        out.append(f'<g class="layer" data-layer={quoteattr(name)}>')
        out.append(f'<polyline class="trajectory" points="{coords}" fill="none" stroke="#9a9a9a" '
                   'stroke-width="1"/>')
        for e, x, y in traj:
            tip = f"{name} · epoch {e} · I(X;T)={x:.4g} · I(T;Y)={y:.4g}"
            out.append(f'<circle cx="{sx(x)}" cy="{sy(y)}" r="3" '
                       f'fill="{_hex(epoch_colour(e, data.first, data.last))}">'
                       f"<title>{escape(tip)}</title></circle>")
        if traj:
            _, x, y = traj[-1]
            out.append(f'<text x="{sx(x) + 6}" y="{sy(y) - 6}" font-size="10" fill="{DARK}">'
                       f"{escape(name)}</text>")
        out.append("</g>")
    # the last epoch's layers joined
    last = data.last_points()
    if len(last) > 1:
        d = "M " + " L ".join(f"{sx(x)},{sy(y)}" for x, y in last)
        out.append(f'<path class="last-epoch" d="{d}" fill="none" stroke="{DARK}" stroke-width="1"/>')
    # colour legend: a bar of the ramp, first epoch at the bottom, last at the top
    lx, ly, lw, lh, steps = W - RIGHT + 40, TOP + 30, 16, ph - 60, 32
    out.append('<g class="legend">')
    out.append(f'<text x="{lx}" y="{ly - 12}">epoch</text>')
    for k in range(steps):
        colour = _hex(ramp_at((steps - 1 - k) / (steps - 1)))
        out.append(f'<rect x="{lx}" y="{round(ly + k * lh / steps, 2)}" width="{lw}" '
                   f'height="{round(lh / steps + 0.5, 2)}" fill="{colour}"/>')
    out.append(f'<rect x="{lx}" y="{ly}" width="{lw}" height="{lh}" fill="none" stroke="{DARK}"/>')
    out.append(f'<text x="{lx + lw + 6}" y="{ly + 10}">{data.last}</text>')
    out.append(f'<text x="{lx + lw + 6}" y="{ly + lh}">{data.first}</text>')
    out.append(f'<text x="{lx}" y="{ly + lh + 18}" font-size="10" fill="#666666">log scale</text>')
    out.append("</g>")
    out.append("</svg>")
    return ("\n".join(out) + "\n").encode("utf-8")


# ---------------------------------------------------------------------- PNG
def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _png_bytes(data: _Plane) -> bytes:
    # Figure + Agg canvas directly: no pyplot global state, safe from any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    x_max, y_max = data.limits()
    fig = Figure(figsize=(W / 100, H / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate(data.layers):
        traj = data.trajectory(i)
        if not traj:
            continue
        xs, ys = [x for _, x, _ in traj], [y for _, _, y in traj]
        ax.plot(xs, ys, color="#9a9a9a", linewidth=1, zorder=1)
        ax.scatter(xs, ys, s=12, zorder=2,
                   c=[tuple(c / 255 for c in epoch_colour(e, data.first, data.last)) for e, _, _ in traj])
        ax.annotate(name, (xs[-1], ys[-1]), xytext=(5, 5), textcoords="offset points", fontsize=7)
    last = data.last_points()
    if len(last) > 1:
        ax.plot([p[0] for p in last], [p[1] for p in last], color=DARK, linewidth=1, zorder=3)
    if data.h_x is not None:
        ax.axvline(data.h_x, color="#888888", linestyle="--", linewidth=1)
    if data.h_y is not None:
        ax.axhline(data.h_y, color="#888888", linestyle="--", linewidth=1)
    ax.set_xlim(0, x_max * 1.02)
    ax.set_ylim(0, y_max * 1.05)
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(data.title())
    ax.grid(True, color="#dddddd", linewidth=0.5)
    cmap = ListedColormap([tuple(c / 255 for c in ramp_at(k / 255)) for k in range(256)])
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, ticks=[0, 1])
    bar.ax.set_yticklabels([str(data.first), str(data.last)])
    bar.set_label("epoch (log scale)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------- entry point
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


def export_plane(view: RunView, plane: str, out_dir: str | Path,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``<run id>-<plane>.csv|.svg|.png`` into ``out_dir``; return the paths written.

    PNG needs matplotlib (an optional extra): without it, PNG is skipped silently and is
    simply absent from the result. Unknown plane/format or an empty plane is a UserError.
    """
    known = list(dict.fromkeys([*view.plane_names, *view.planes]))
    if plane not in known:
        raise UserError(f"unknown plane {plane!r}; this run has: {', '.join(known) or 'none'}")
    if not view.planes.get(plane):
        raise UserError(f"plane {plane!r}: nothing to export yet (no measured epochs)")
    wanted = [str(f).lower().lstrip(".") for f in formats]
    bad = [f for f in wanted if f not in FORMATS]
    if bad:
        raise UserError(f"unknown export format {bad[0]!r}; choose from {', '.join(FORMATS)}")

    data = _Plane(view, plane)
    out = Path(out_dir)
    stem = f"{_safe(data.run_id)}-{_safe(plane)}"
    writers = {"csv": _csv_bytes, "svg": _svg_bytes, "png": _png_bytes}
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for fmt in dict.fromkeys(wanted):
            if fmt == "png" and not have_matplotlib():
                continue
            path = out / f"{stem}.{fmt}"
            atomic_write_bytes(path, writers[fmt](data))
            written.append(path)
    except OSError as exc:
        raise UserError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    return written
