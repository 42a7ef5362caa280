"""Terminal figures drawn with plotext, as ANSI strings (no Textual here).

plotext keeps global state: call these from one thread (the UI's) only.
Colours: every point of a trajectory is coloured by its epoch (log scale), in a few bins.
"""

from __future__ import annotations

import math

import plotext as plt

from ibtui.tui.state import RunView

EPOCH_BINS = 8
BAND_PARTNER = {"kde_upper": "kde_lower", "kde_lower": "kde_upper"}  # drawn together as a band
LAYER_MARKERS = ["●", "◆", "■", "▲", "▼", "★", "✚", "✖", "○", "◇"]


# A viridis-like ramp, dark (early epochs) to bright (late epochs): evenly spaced RGB stops.
RAMP: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
    (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
)


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


def binned_epoch_colour(epoch: int, first: int, last: int) -> tuple[int, int, int]:
    """The epoch colour (log1p scale, viridis-like), quantized to EPOCH_BINS steps."""
    fraction = epoch_position(epoch, first, last)
    return ramp_at(round(fraction * (EPOCH_BINS - 1)) / (EPOCH_BINS - 1))


def _start(width: int, height: int, title: str = "") -> None:
    plt.clear_figure()
    plt.limitsize(False, False)  # the widget's size, not the terminal's, bounds the figure
    plt.plotsize(max(width, 10), max(height, 5))
    plt.theme("pro")
    if title:  # plotext drops a title wider than the figure: shorten it instead
        room = max(width, 10) - 6
        plt.title(title if len(title) <= room else title[:room - 1] + "…")


def empty_figure(width: int, height: int, message: str) -> str:
    _start(width, height, message)
    plt.xlim(0, 1)
    plt.ylim(0, 1)
    plt.xticks([])
    plt.yticks([])
    return plt.build()


def _number(value: object) -> float:
    """A finite float, or NaN for anything else (a replayed file may hold anything)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def plane_figure(view: RunView, plane: str, width: int, height: int, cursor: int | None = None) -> str:
    """Information plane of one estimator: x = I(X;T), y = I(T;Y) in bits, one trajectory per layer.

    Points are coloured by epoch; the layers at the latest epoch (or at ``cursor``) are joined.
    H(X) and H(Y) are marked when known. For a KDE bound, the other bound is drawn dimmed and
    each layer's two bounds at the shown epoch are joined: the lower–upper band. For an
    ensemble the trajectories are the members' means, with a dimmed ±1 standard deviation band
    of I(X;T) along them and every member's own point at the shown epoch. With gradient
    statistics, ◇ marks each layer at the first measured epoch from its drift→diffusion
    transition on (once the shown epoch has reached it).
    """
    points = view.planes.get(plane)
    if not points:
        return empty_figure(width, height, f"{plane or 'plane'}: waiting for the first measurement…")
    epochs = sorted(points)
    first, last = epochs[0], epochs[-1]
    shown = last if cursor is None else max((e for e in epochs if e <= cursor), default=first)
    ensemble = f" · mean of {view.n_members} seeds ±1 sd" if view.n_members > 1 else ""
    _start(width, height, f"{plane} · epoch {shown}{ensemble} · x I(X;T), y I(T;Y) in bits")
    members = view.members.get(plane, {})
    member_x = [v for e in members for row in members[e][0] for v in row]
    member_y = [v for e in members for row in members[e][1] for v in row]
    x_max = max([view.h_x or 0.0, *member_x] + [max(points[e][0]) for e in epochs]) * 1.05 or 1.0
    y_max = max([view.h_y or 0.0, *member_y] + [max(points[e][1]) for e in epochs]) * 1.08 or 1.0
    plt.xlim(0, x_max)
    plt.ylim(0, y_max)
    if view.h_x:
        plt.vline(view.h_x, "gray")
        plt.text("H(X)", view.h_x, y_max * 0.04, color="gray", alignment="right")
    if view.h_y:
        plt.hline(view.h_y, "gray")
        plt.text(f"H(Y)={view.h_y:.2f}", x_max * 0.55, view.h_y, color="gray", alignment="center")
    colours = [binned_epoch_colour(e, first, last) for e in epochs]
    n_layers = len(points[first][0])
    partner = view.planes.get(BAND_PARTNER.get(plane, ""), {})
    if partner:  # the KDE lower–upper band: the other bound dimmed, the two joined at the shown epoch
        for layer in range(n_layers):
            plt.scatter([partner[e][0][layer] for e in sorted(partner)], [partner[e][1][layer] for e in sorted(partner)],
                        color="gray", marker="dot")
            if shown in partner:
                plt.plot([points[shown][0][layer], partner[shown][0][layer]],
                         [points[shown][1][layer], partner[shown][1][layer]], color="gray", marker="braille")
    if members:  # an ensemble: the members' spread (±1 sd of I(X;T)) along each layer's mean trajectory
        for layer in range(n_layers):
            xs, ys = [], []
            for e in epochs:
                spread = view.spread(plane, e)
                if spread is None:
                    continue
                x, y, sd = points[e][0][layer], points[e][1][layer], spread[0][layer]
                xs += [x - sd, x - sd / 2, x + sd / 2, x + sd]
                ys += [y] * 4
            if xs:
                plt.scatter(xs, ys, color="gray", marker="braille")
        if shown in members:  # every member's own point at the shown epoch
            plt.scatter([v for row in members[shown][0] for v in row], [v for row in members[shown][1] for v in row],
                        color="gray", marker="•")
    for layer in range(n_layers):
        xs = [points[e][0][layer] for e in epochs]
        ys = [points[e][1][layer] for e in epochs]
        plt.scatter(xs, ys, color=colours, marker="dot")
    transitions = view.transitions()
    if len(transitions) == n_layers:  # drift→diffusion: each layer's point at its transition epoch
        marks = [(layer, min((e for e in epochs if e >= epoch), default=None))
                 for layer, epoch in enumerate(transitions) if epoch is not None]
        marks = [(layer, e) for layer, e in marks if e is not None and e <= shown]
        if marks:
            plt.scatter([points[e][0][layer] for layer, e in marks], [points[e][1][layer] for layer, e in marks],
                        color="yellow", marker="◇", label="drift→diffusion")
    joined = points[shown]
    plt.plot(joined[0], joined[1], color="white", marker="braille")
    names = view.layers if len(view.layers) == n_layers else [f"L{i + 1}" for i in range(n_layers)]
    for layer in range(n_layers):
        plt.scatter([joined[0][layer]], [joined[1][layer]], color="white",
                    marker=LAYER_MARKERS[layer % len(LAYER_MARKERS)], label=names[layer])
    return plt.build()


FAMILY_COLOURS = ("cyan", "green", "yellow", "magenta", "red", "blue", "orange", "white")


def family_figure(view: RunView, family: str, layer: int, width: int, height: int, cursor: int | None = None) -> str:
    """One layer on the information plane under every parameter value of an analysis family
    (e.g. bins = 8 … 50): one trajectory per value, up to the shown epoch, in bits."""
    planes = view.family_planes(family)
    if not planes:
        return empty_figure(width, height, f"{family}: no analysis planes (run `ibtui analyze`)")
    n_layers = len(next(iter(view.planes[planes[0]].values()))[0])
    layer = max(0, min(layer, n_layers - 1))
    names = view.layers if len(view.layers) == n_layers else [f"L{i + 1}" for i in range(n_layers)]
    epochs = sorted(view.planes[planes[0]])
    shown = epochs[-1] if cursor is None else max((e for e in epochs if e <= cursor), default=epochs[0])
    _start(width, height, f"{family} · layer {names[layer]} · epoch {shown} · x I(X;T), y I(T;Y) in bits")
    x_max = max([view.h_x or 0.0] + [max(p[0][layer] for p in view.planes[q].values()) for q in planes]) * 1.05 or 1.0
    y_max = max([view.h_y or 0.0] + [max(p[1][layer] for p in view.planes[q].values()) for q in planes]) * 1.08 or 1.0
    plt.xlim(0, x_max)
    plt.ylim(0, y_max)
    bases = {plane.partition("[")[0] for plane in planes}
    for index, plane in enumerate(planes):
        points = view.planes[plane]
        upto = [e for e in sorted(points) if e <= shown]
        colour = FAMILY_COLOURS[index % len(FAMILY_COLOURS)]
        base, _, value = plane.partition("[")
        label = value.rstrip("]") if len(bases) == 1 else f"{base} {value.rstrip(']')}"
        plt.plot([points[e][0][layer] for e in upto], [points[e][1][layer] for e in upto], color=colour,
                 marker="braille", label=label)
        if upto:
            plt.scatter([points[upto[-1]][0][layer]], [points[upto[-1]][1][layer]], color=colour,
                        marker=LAYER_MARKERS[layer % len(LAYER_MARKERS)])
    return plt.build()


def schedule_figure(view: RunView, width: int, height: int) -> str:
    """Measured epochs (x) against the skip to the next measurement (y)."""
    epochs, skips = view.schedule_points()
    if not skips:
        return empty_figure(width, height, "schedule: no gaps yet")
    _start(width, height, f"skip · {len(epochs)} measured")
    plt.scatter(epochs[:-1], skips, color="cyan", marker="braille")
    plt.xlim(0, max(epochs[-1], 1))
    plt.ylim(0, max(skips) * 1.1 + 1)
    return plt.build()


def curves_figure(view: RunView, width: int, height: int) -> str:
    """Training loss and train/test accuracy per epoch (at most ~width·2 points each)."""
    c = view.curves
    if not c["epoch"]:
        measured = [(e, view.measures[e]) for e in view.epochs]
        if not measured:
            return empty_figure(width, height, "curves: no epochs yet")
        xs = [e for e, _ in measured]
        series = {k: [_number(m.get(k)) for _, m in measured] for k in ("train_loss", "train_acc", "test_acc")}
    else:
        stride = max(1, len(c["epoch"]) // max(2 * width, 1))
        xs = c["epoch"][::stride]
        series = {k: c[k][::stride] for k in ("train_loss", "train_acc", "test_acc")}
    _start(width, height, "loss · accuracy")
    for key, colour in (("train_loss", "red"), ("train_acc", "green"), ("test_acc", "orange")):
        pairs = [(x, y) for x, y in zip(xs, series[key]) if y is not None and math.isfinite(y)]
        if pairs:
            plt.plot([p[0] for p in pairs], [p[1] for p in pairs], color=colour, marker="braille",
                     label=key.replace("_", " "))
    plt.ylim(0, max(1.0, max((v for v in series["train_loss"] if v is not None and math.isfinite(v)), default=1.0)))
    return plt.build()
