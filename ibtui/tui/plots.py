"""Terminal figures drawn with plotext, as ANSI strings (no Textual here).

plotext keeps global state: call these from one thread (the UI's) only.
Colours: every point of a trajectory is coloured by its epoch (log scale), in a few bins.
"""

from __future__ import annotations

import math

import plotext as plt
from rich.text import Text

from ibtui.figures import RUN_COLOURS, RUN_LETTERS
from ibtui.tui.state import PlaneOptions, RunView

EPOCH_BINS = 8
EPOCH_DECADES = (0, 1, 10, 100, 1000, 10_000, 100_000)
"""The plane's epoch colour scale: absolute and logarithmic, the same for every run and fixed while a
live run grows. A point's colour is that of the decade its epoch falls in (0, 1–9, 10–99, …)."""
PATH_COLOUR = (96, 96, 96)
NOW_COLOUR = (150, 150, 150)
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


def decade(epoch: int) -> int:
    """Index in ``EPOCH_DECADES`` of the decade holding ``epoch``."""
    return max(0, sum(1 for start in EPOCH_DECADES if epoch >= start) - 1)


def decade_colour(epoch: int) -> tuple[int, int, int]:
    """The absolute epoch colour (``EPOCH_DECADES``): epoch 0 dark, each decade brighter."""
    return ramp_at(decade(epoch) / (len(EPOCH_DECADES) - 1))


def decade_label(index: int) -> str:
    start = EPOCH_DECADES[index]
    return "0" if start == 0 else (f"{start // 1000}k" if start >= 1000 else str(start))


def binned_epoch_colour(epoch: int, first: int, last: int) -> tuple[int, int, int]:
    """The epoch colour (log1p scale, viridis-like), quantized to EPOCH_BINS steps."""
    fraction = epoch_position(epoch, first, last)
    return ramp_at(round(fraction * (EPOCH_BINS - 1)) / (EPOCH_BINS - 1))


def _start(width: int, height: int, title: str | tuple[str, ...] = "") -> None:
    plt.clear_figure()
    plt.limitsize(False, False)  # the widget's size, not the terminal's, bounds the figure
    plt.plotsize(max(width, 10), max(height, 5))
    plt.theme("pro")
    if title:  # plotext drops a title wider than the figure: shorten it instead
        room = max(width, 10) - 6  # the y tick labels take a few columns
        titles = (title,) if isinstance(title, str) else title
        plt.title(next((t for t in titles if len(t) <= room), fit(titles[-1], room)))


def fit(text: str, room: int) -> str:
    """``text`` cut to ``room`` characters, with … where it was cut."""
    return text if len(text) <= room else text[:max(room - 1, 0)] + "…"


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


def shown_epoch(view: RunView, plane: str, cursor: int | None) -> int | None:
    """The measured epoch a plane shows: the cursor's (the last measured at or before it), else the latest."""
    points = view.planes.get(plane)
    if not points:
        return None
    epochs = sorted(points)
    return epochs[-1] if cursor is None else max((e for e in epochs if e <= cursor), default=epochs[0])


def plane_figure(view: RunView, plane: str, width: int, height: int, cursor: int | None = None,
                 options: PlaneOptions | None = None) -> str:
    """Information plane of one estimator: x = I(X;T), y = I(T;Y) in bits; every layer a path.

    Each layer is drawn as a dim line through its measured epochs in order, its own marker at
    every point, coloured by the epoch's decade on the absolute log scale ``EPOCH_DECADES`` (the
    same for every run, fixed while a live run grows). The layers at the shown epoch (the latest,
    or the cursor's) are joined by a dotted grey line and drawn white. H(X) and H(Y) are marked.
    For a KDE bound the other bound's points are grey; for an ensemble the paths are the members'
    means, with grey ±1 sd ticks of I(X;T) and every member's point at the shown epoch; with
    gradient statistics ◇ marks each layer's drift→diffusion point. There is no legend inside the
    plot: ``plane_key`` says what every mark is, with the numbers at the shown epoch. ``options``
    hide layers and zoom (``PlaneOptions``).
    """
    options = options or PlaneOptions()
    points = view.planes.get(plane)
    if not points:
        return empty_figure(width, height, f"{plane or 'plane'}: waiting for the first measurement…")
    shown = shown_epoch(view, plane, cursor)
    members = view.members.get(plane, {})
    count = len(members[shown][0]) if shown in members else 0
    _start(width, height, f"{plane} · epoch {shown}" + (f" · mean of {count} networks ±1 sd" if count > 1 else "")
           + (" · zoomed (0 resets)" if options.zoomed else ""))
    plt.xlabel("I(X;T), bits")
    plt.ylabel("I(T;Y), bits")
    set_limits(*plane_extent([view], plane), options)
    if view.h_x:
        plt.vline(view.h_x, "gray")
    if view.h_y:
        plt.hline(view.h_y, "gray")
    visible = options.visible(len(points[shown][0]))
    draw_run(view, plane, shown, visible, PATH_COLOUR, "white")
    return plt.build()


def draw_run(view: RunView, plane: str, shown: int, visible: list[int], path_colour: object,
             now_colour: object, join_colour: object = NOW_COLOUR) -> None:
    """One run's layers on the current plotext plane, up to the ``shown`` epoch (a cursor hides what
    comes after it): each visible layer's path (``path_colour``) with its marker at every measured
    epoch, coloured by the epoch's decade; the layers at ``shown`` joined (dotted) and drawn in
    ``now_colour`` (the joining line in ``join_colour``). Overlays: the other KDE bound's points in grey, joined to this bound at ``shown``;
    an ensemble's ±1 sd of I(X;T) as grey ticks and every member's point at ``shown``; ◇ at each
    layer's drift→diffusion epoch (gradient statistics) once it is reached."""
    points = view.planes[plane]
    epochs = [e for e in sorted(points) if e <= shown]
    partner = view.planes.get(BAND_PARTNER.get(plane, ""), {})
    if partner:  # the other KDE bound, grey; joined to this one at the shown epoch
        partner_epochs = [e for e in sorted(partner) if e <= shown]
        for layer in visible:
            if shown in partner:  # drawn first, so that its end does not cover the bound's point
                plt.plot([points[shown][0][layer], partner[shown][0][layer]],
                         [points[shown][1][layer], partner[shown][1][layer]], color="gray", marker="braille")
            plt.scatter([partner[e][0][layer] for e in partner_epochs], [partner[e][1][layer] for e in partner_epochs],
                        color="gray", marker="dot")
    members = view.members.get(plane, {})
    if members:  # an ensemble: the members' spread (±1 sd of I(X;T)) along each layer's mean path
        spreads = [(e, view.spread(plane, e)) for e in epochs]
        xs = [points[e][0][layer] + sign * sd[0][layer] for e, sd in spreads if sd for layer in visible
              for sign in (-1, 1)]
        ys = [points[e][1][layer] for e, sd in spreads if sd for layer in visible for _ in (-1, 1)]
        if xs:
            plt.scatter(xs, ys, color="gray", marker="dot")
        if shown in members:  # every member's own point at the shown epoch
            plt.scatter([row[i] for row in members[shown][0] for i in visible],
                        [row[i] for row in members[shown][1] for i in visible], color="gray", marker="•")
    colours = [decade_colour(e) for e in epochs]
    for layer in visible:
        xs = [points[e][0][layer] for e in epochs]
        ys = [points[e][1][layer] for e in epochs]
        if len(xs) > 1:
            plt.plot(xs, ys, color=path_colour, marker="braille")  # the layer's path, in epoch order
        plt.scatter(xs, ys, color=colours, marker=LAYER_MARKERS[layer % len(LAYER_MARKERS)])
    marks = transition_points(view, plane, shown, visible)
    if marks:  # drift→diffusion: each layer's point at its transition epoch
        plt.scatter([points[e][0][layer] for layer, e in marks], [points[e][1][layer] for layer, e in marks],
                    color="yellow", marker="◇")
    joined = points[shown]
    plt.plot([joined[0][i] for i in visible], [joined[1][i] for i in visible], color=join_colour, marker="·")  # the layers at the shown epoch, dotted
    for layer in visible:
        plt.scatter([joined[0][layer]], [joined[1][layer]], color=now_colour,
                    marker=LAYER_MARKERS[layer % len(LAYER_MARKERS)])


def transition_points(view: RunView, plane: str, shown: int, visible: list[int]) -> list[tuple[int, int]]:
    """(layer, measured epoch) of each visible layer's drift→diffusion mark on ``plane``: the first
    measured epoch at or after the layer's transition, for transitions reached by ``shown``."""
    points = view.planes.get(plane, {})
    transitions = view.transitions()
    if not points or len(transitions) != len(points[shown][0]):
        return []
    epochs = sorted(points)
    marks = [(layer, min((e for e in epochs if e >= epoch), default=None))
             for layer, epoch in enumerate(transitions) if epoch is not None and layer in visible]
    return [(layer, e) for layer, e in marks if e is not None and e <= shown]


def plane_extent(views: list[RunView], plane: str) -> tuple[float, float]:
    """The whole plane's axis ranges (0 to these, bits): H(X), H(Y) and every point of ``plane`` in
    ``views`` (ensemble members too), with a margin."""
    xs: list[float] = []
    ys: list[float] = []
    for view in views:
        xs.append(view.h_x or 0.0)
        ys.append(view.h_y or 0.0)
        for ixt, ity in view.planes.get(plane, {}).values():
            xs += ixt
            ys += ity
        for ixt, ity in view.members.get(plane, {}).values():
            xs += [v for row in ixt for v in row]
            ys += [v for row in ity for v in row]
    return (max(xs, default=0.0) * 1.05 or 1.0), (max(ys, default=0.0) * 1.08 or 1.0)


def set_limits(x_max: float, y_max: float, options: PlaneOptions) -> None:
    """The plane's axes: 0 to the extent, or the zoomed ranges; round ticks either way."""
    (x0, x1), (y0, y1) = options.x or (0.0, x_max), options.y or (0.0, y_max)
    plt.xlim(x0, x1)
    plt.ylim(y0, y1)
    plt.xticks(*round_ticks(x1, low=x0))
    plt.yticks(*round_ticks(y1, low=y0))


def round_ticks(high: float, target: int = 5, low: float = 0.0) -> tuple[list[float], list[str]]:
    """Round tick values (1, 2 or 5 × 10^k steps) from ``low`` (0) to ``high``, and their labels."""
    if not (math.isfinite(high) and math.isfinite(low)) or high <= low:
        return [low if math.isfinite(low) else 0.0], ["0"]
    raw = (high - low) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [i * step for i in range(math.ceil(low / step), math.floor(high / step) + 1)]
    digits = max(0, -math.floor(math.log10(step)))
    return ticks, [f"{t:.{digits}f}" for t in ticks]


def _cell(value: float, cap: float | None) -> str:
    text = f"{value:5.2f}"
    return text + ("▲" if cap is not None and value >= cap - 1e-6 else " ")


def plane_key(view: RunView, plane: str, cursor: int | None = None, options: PlaneOptions | None = None) -> Text:
    """What the plane shows, outside the plot: per layer its key (1–9 hide or show it), marker, name
    and the numbers at the shown epoch (bits; KDE: the other bound beside; ensembles: mean ± sd;
    ▲ at a cap; a hidden layer struck through), the epoch colour scale, every overlay named, and
    the zoomed ranges."""
    options = options or PlaneOptions()
    text = Text(no_wrap=True, overflow="ellipsis")
    points = view.planes.get(plane)
    shown = shown_epoch(view, plane, cursor)
    if not points or shown is None:
        text.append("no measured epoch yet", style="dim")
        return text
    ixt, ity = points[shown]
    partner_name = BAND_PARTNER.get(plane, "")
    partner = view.planes.get(partner_name, {}).get(shown)
    spread = view.spread(plane, shown)
    names = view.layers if len(view.layers) == len(ixt) else [f"L{i + 1}" for i in range(len(ixt))]
    text.append(f"epoch {shown} · bits\n", style="bold")
    text.append(" " * 13 + ("I(X;T)±sd   I(T;Y)" if spread is not None else "I(X;T)  I(T;Y)")
                + (f"  {partner_name}" if partner is not None else "") + "\n", style="dim")
    for layer, name in enumerate(names):
        hidden = layer in options.hidden
        row = "dim strike" if hidden else ""
        text.append(f"{layer + 1 if layer < 9 else ' '} ", style="dim")
        text.append(f"{LAYER_MARKERS[layer % len(LAYER_MARKERS)]} ", style="dim" if hidden else "bold")
        if hidden:  # off the plane: its name, struck through, and no numbers
            text.append(f"{name[:9]:9s}", style=row)
            text.append("  hidden\n", style="dim")
            continue
        text.append(f"{name[:9]:9s} {_cell(ixt[layer], view.h_x)}")
        if spread is not None:
            text.append(f"±{spread[0][layer]:<4.2f}", style="dim")
        text.append(f" {_cell(ity[layer], view.h_y)}")
        if partner is not None:
            text.append(f" {partner[0][layer]:5.2f},{partner[1][layer]:.2f}", style="dim")
        text.append("\n")
    epoch_scale(text, max(points))
    if view.h_x or view.h_y:  # before the longer notes: a short side panel (80x24) still shows it
        text.append(f"│ H(X) = {view.h_x or 0:.2f}  ─ H(Y) = {view.h_y or 0:.2f}\n", style="dim")
    text.append("··· ", style="grey62")
    text.append("the layers at the shown epoch\n", style="dim")
    if partner is not None:
        text.append(f"grey: {partner_name}, the other bound (its I(X;T),I(T;Y) at right): I(X;T) lies between "
                    "the bounds; I(T;Y) is a difference of bounds, not a bracket\n", style="dim")
    if spread is not None:
        count = len(view.members[plane][shown][0])
        text.append(f"mean of {count} networks; ±: sd of I(X;T)\n", style="dim")
    if any(epoch is not None and epoch <= shown for epoch in view.transitions()):
        floor = view.gradient_noise_floor()
        text.append("◇ drift→diffusion: gradient SNR below 1"
                    + (f" (noise floor {floor:.2f})" if floor else "") + "\n", style="dim")
    if any(v >= (view.h_x or math.inf) - 1e-6 for v in ixt) or any(v >= (view.h_y or math.inf) - 1e-6 for v in ity):
        text.append("▲ at its cap (H(X) or H(Y)): saturated\n", style="dim")
    zoom_note(text, options)
    return text


def epoch_scale(text: Text, last: int, note: str = "(log)") -> None:
    """The epoch colour scale as a key line: the absolute decades (``EPOCH_DECADES``) up to the one
    holding ``last``, each in its colour (the colours never depend on the run)."""
    text.append("epoch ", style="dim")
    for index in range(decade(last) + 1):
        r, g, b = ramp_at(index / (len(EPOCH_DECADES) - 1))
        text.append("■", style=f"rgb({r},{g},{b})")
        text.append(f"{decade_label(index)} ", style="dim")
    text.append(note + "\n", style="dim")


def zoom_note(text: Text, options: PlaneOptions) -> None:
    if options.zoomed:
        (x0, x1), (y0, y1) = options.x or (0, math.nan), options.y or (0, math.nan)
        text.append("zoomed: ", style="bold yellow")
        text.append((f"I(X;T) {x0:.2f}–{x1:.2f} " if options.x else "") + (f"I(T;Y) {y0:.2f}–{y1:.2f} " if options.y else "")
                    + "bits (0 resets)\n", style="dim")


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
    _start(width, height, f"{family} · layer {names[layer]} · epoch {shown}")
    plt.xlabel("I(X;T), bits")
    plt.ylabel("I(T;Y), bits")
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


CURSOR_COLOUR = "white"


def _cursor_line(cursor: int | None, top: float, log_epochs: bool = False) -> None:
    """The cursor epoch as a vertical line from 0 to ``top`` (curves and schedule), drawn over the
    data (plotext's own vline is drawn under it and vanishes where a curve passes)."""
    if cursor is not None and (cursor > 0 or not log_epochs):
        plt.plot([cursor, cursor], [0, top], color=CURSOR_COLOUR, marker="│")


def _log_epoch_axis(last: float) -> None:
    """A logarithmic epoch axis with round ticks (1, 10, 100, …)."""
    plt.xscale("log")
    ticks = [10 ** k for k in range(0, 8) if 10 ** k <= max(last, 1)]
    plt.xticks(ticks, [decade_label(decade(t)) if t >= 1000 else str(t) for t in ticks])


def schedule_figure(view: RunView, width: int, height: int, cursor: int | None = None) -> str:
    """Measured epochs (x) against the skip to the next measurement (y), with the cursor epoch."""
    epochs, skips = view.schedule_points()
    if not skips:
        return empty_figure(width, height, "schedule: no gaps yet")
    _start(width, height, ("epochs until next measurement", "epochs to next measurement", "epochs to next"))
    plt.xlabel("epoch")
    plt.scatter(epochs[:-1], skips, color="cyan", marker="braille")
    plt.xlim(0, max(epochs[-1], 1))
    plt.xticks(*round_ticks(max(epochs[-1], 1), 4))
    plt.yticks(*round_ticks(max(skips) * 1.1 + 1, 3))
    plt.ylim(0, max(skips) * 1.1 + 1)
    _cursor_line(cursor, max(skips) * 1.1 + 1)
    return plt.build()


def curve_series(view: RunView, width: int) -> tuple[list[float], dict[str, list[float]]]:
    """(epochs, {train_loss, train_acc, test_acc}) of a run, at most ~2·width points each: the
    per-epoch curves, or the measured epochs' values when there are none."""
    c = view.curves
    if not c["epoch"]:
        measured = [(e, view.measures[e]) for e in view.epochs]
        xs = [float(e) for e, _ in measured]
        return xs, {k: [_number(m.get(k)) for _, m in measured] for k in ("train_loss", "train_acc", "test_acc")}
    stride = max(1, len(c["epoch"]) // max(2 * width, 1))
    return c["epoch"][::stride], {k: c[k][::stride] for k in ("train_loss", "train_acc", "test_acc")}


def _finite_pairs(xs: list[float], ys: list[float], log_epochs: bool) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y) and (x > 0 or not log_epochs)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


SHORT_PLOT_ROWS = 10
"""Below this height a curves plot names its epoch axis in its title, not on a row of its own
(at 80x24 the curves panel has 6–8 rows: the row is worth a data row)."""


def epoch_titles(titles: tuple[str, ...], height: int, log_epochs: bool) -> tuple[str, ...]:
    """``titles`` (longest first), ending in ", by epoch" (or " / epoch"; "log epoch" on a log scale) on a
    short plot; ``_start`` takes the first that fits."""
    if height >= SHORT_PLOT_ROWS:
        return titles
    by = ", by log epoch" if log_epochs else ", by epoch"
    short = " / log epoch" if log_epochs else " / epoch"
    return tuple(t + by for t in titles) + tuple(t + short for t in titles) + titles[-1:]


def epoch_label(height: int, log_epochs: bool) -> None:
    """The epoch axis title, on plots tall enough to spare its row (else in the title)."""
    if height >= SHORT_PLOT_ROWS:
        plt.xlabel("epoch, log scale" if log_epochs else "epoch")


def curves_figure(view: RunView, width: int, height: int, cursor: int | None = None, log_epochs: bool = False) -> str:
    """Training loss (nats) and train/test accuracy per epoch (at most ~width·2 points each), the
    cursor epoch as a line; ``log_epochs`` puts the epochs on a log scale."""
    xs, series = curve_series(view, width)
    if not xs:
        return empty_figure(width, height, "curves: no epochs yet")
    titles = ("loss (nats) red · accuracy: train green, test orange",
              "loss (nats) red · accuracy green, test orange", "loss (nats) red · accuracy green",
              "loss (nats) · accuracy", "loss (nats) · acc")
    _start(width, height, epoch_titles(titles, height, log_epochs))
    epoch_label(height, log_epochs)
    for key, colour in (("train_loss", "red"), ("train_acc", "green"), ("test_acc", "orange")):
        px, py = _finite_pairs(xs, series[key], log_epochs)
        if px:
            plt.plot(px, py, color=colour, marker="braille")
    if log_epochs:
        _log_epoch_axis(max(xs))
    else:
        plt.xticks(*round_ticks(max(max(xs), 1), 4))
    top = max(1.0, max((v for v in series["train_loss"] if v is not None and math.isfinite(v)), default=1.0))
    _cursor_line(cursor, top, log_epochs)
    plt.ylim(0, top)
    return plt.build()


# ---------------------------------------------------------------------------- several runs on one plane
RUN_HUES = RUN_COLOURS  # each compared run's hue, the same as in the exported figures


def run_hue(index: int) -> tuple[int, int, int]:
    return RUN_HUES[index % len(RUN_HUES)]


def run_letter(index: int) -> str:
    return RUN_LETTERS[index % len(RUN_LETTERS)]


def compare_figure(views: list[RunView], plane: str, width: int, height: int, cursor: int | None = None,
                   options: PlaneOptions | None = None) -> str:
    """Several runs on one information plane (bits), on shared axes and one absolute epoch scale:
    each run's layers are paths in the run's own hue (``RUN_HUES``), each layer with its own marker
    at every measured point, coloured by the epoch's decade (as ``plane_figure``); every run's layers
    at the shown epoch (the cursor's, the same epoch for every run) are joined and drawn in its hue.
    ``compare_key`` names runs, layers and marks outside the plot."""
    options = options or PlaneOptions()
    drawn = [(i, v) for i, v in enumerate(views) if v.planes.get(plane)]
    if not drawn:
        return empty_figure(width, height, f"{plane or 'plane'}: no run has measured it yet")
    shown = [shown_epoch(v, plane, cursor) for _, v in drawn]
    at = f"epoch {cursor}" if cursor is not None else f"latest epoch ({max(e for e in shown if e is not None)})"
    _start(width, height, f"{plane} · {len(drawn)} runs · {at}" + (" · zoomed (0 resets)" if options.zoomed else ""))
    plt.xlabel("I(X;T), bits")
    plt.ylabel("I(T;Y), bits")
    set_limits(*plane_extent([v for _, v in drawn], plane), options)
    h_x = max((v.h_x or 0.0 for _, v in drawn), default=0.0)
    h_y = max((v.h_y or 0.0 for _, v in drawn), default=0.0)
    if h_x:
        plt.vline(h_x, "gray")
    if h_y:
        plt.hline(h_y, "gray")
    for (index, view), epoch in zip(drawn, shown):
        hue = run_hue(index)
        draw_run(view, plane, epoch, options.visible(len(view.planes[plane][epoch][0])), hue, hue, hue)
    return plt.build()


def compare_key(views: list[RunView], plane: str, cursor: int | None = None,
                options: PlaneOptions | None = None) -> Text:
    """The compare plane's key, outside the plot: the shown epoch, then per layer (its key 1–9
    hides it) its marker, name and every run's I(X;T) and I(T;Y) in bits at that epoch, in the
    run's column (its letter and hue, named in the header), the epoch scale and the marks."""
    options = options or PlaneOptions()
    text = Text(no_wrap=True, overflow="ellipsis")
    shown = [shown_epoch(v, plane, cursor) for v in views]
    if all(e is None for e in shown):
        text.append("no measured epoch yet", style="dim")
        return text
    width = max((len(v.planes[plane][e][0]) for v, e in zip(views, shown) if e is not None), default=0)
    names = next((v.layers for v in views if len(v.layers) == width), [f"L{i + 1}" for i in range(width)])
    epochs = sorted({e for e in shown if e is not None})
    if len(epochs) == 1:
        text.append(f"epoch {epochs[0]} · bits: X;T is I(X;T), Y;T is I(T;Y)\n", style="bold")
    else:  # the runs' last measured epochs at (or before) the cursor differ
        text.append("epochs " + " ".join(f"{run_letter(i)} {e if e is not None else '–'}" for i, e in enumerate(shown))
                    + " · bits: X;T is I(X;T), Y;T is I(T;Y)\n", style="bold")
    text.append(f"{'layer':10s}", style="dim")
    for index in range(len(views)):
        r, g, b = run_hue(index)
        text.append(f" {run_letter(index)}:X;T Y;T", style=f"bold rgb({r},{g},{b})")
    text.append("\n")
    for layer, name in enumerate(names):
        hidden = layer in options.hidden
        text.append(f"{layer + 1 if layer < 9 else ' '}", style="dim")
        text.append(f"{LAYER_MARKERS[layer % len(LAYER_MARKERS)]} ", style="dim" if hidden else "bold")
        text.append(f"{name[:7]:7s}", style="dim strike" if hidden else "")
        if hidden:
            text.append("  hidden\n", style="dim")
            continue
        for view, epoch in zip(views, shown):
            values = view.planes[plane][epoch] if epoch is not None else None
            if values is None or layer >= len(values[0]):
                text.append(f" {'–':>4s} {'–':>4s}", style="dim")
            else:
                text.append(f" {values[0][layer]:4.1f} {values[1][layer]:4.2f}")
        text.append("\n")
    epoch_scale(text, max((max(v.planes[plane]) for v in views if v.planes.get(plane)), default=0), "(log)")
    h_x = max((v.h_x or 0.0 for v in views), default=0.0)
    h_y = max((v.h_y or 0.0 for v in views), default=0.0)
    if h_x or h_y:  # before the longer notes: a short side panel (80x24) still shows it
        text.append(f"│ H(X) = {h_x:.2f}  ─ H(Y) = {h_y:.2f}\n", style="dim")
    text.append("a run's paths in its colour; ··· its layers at the shown epoch\n", style="dim")
    ensembles = [(i, len(v.members[plane][e][0])) for i, (v, e) in enumerate(zip(views, shown))
                 if e is not None and e in v.members.get(plane, {})]
    if ensembles:
        text.append(", ".join(f"{run_letter(i)}: mean of {n} networks" for i, n in ensembles)
                    + "; grey ticks: ±1 sd of I(X;T)\n", style="dim")
    partner_name = BAND_PARTNER.get(plane, "")
    bounded = [run_letter(i) for i, (v, e) in enumerate(zip(views, shown)) if e is not None and e in v.planes.get(partner_name, {})]
    if bounded:
        text.append(f"grey dots: {partner_name}, the other bound ({', '.join(bounded)}): I(X;T) lies between the "
                    "bounds; I(T;Y) is a difference of bounds, not a bracket\n", style="dim")
    drifting = [(run_letter(i), v.gradient_noise_floor()) for i, (v, e) in enumerate(zip(views, shown))
                if e is not None and transition_points(v, plane, e, list(range(len(v.planes[plane][e][0]))))]
    if drifting:
        text.append("◇ drift→diffusion: gradient SNR below 1 ("
                    + ", ".join(letter + (f": noise floor {floor:.2f}" if floor else "") for letter, floor in drifting)
                    + ")\n", style="dim")
    zoom_note(text, options)
    return text


def compare_curves_figure(views: list[RunView], width: int, height: int, cursor: int | None = None,
                          log_epochs: bool = False) -> str:
    """Every run's training loss (nats, a line) and test accuracy (dots) in the run's hue, on one
    epoch axis, with the cursor epoch."""
    series = [curve_series(v, width) for v in views]
    if not any(xs for xs, _ in series):
        return empty_figure(width, height, "curves: no epochs yet")
    _start(width, height, epoch_titles(("loss (nats): lines · test accuracy: dots", "loss (nats) ─ · test acc •", "loss (nats) ─ · acc •"),
                                       height, log_epochs))
    epoch_label(height, log_epochs)
    top = 1.0
    for index, (xs, values) in enumerate(series):
        hue = run_hue(index)
        px, py = _finite_pairs(xs, values["train_loss"], log_epochs)
        if px:
            plt.plot(px, py, color=hue, marker="braille")
            top = max(top, max(py))
        px, py = _finite_pairs(xs, values["test_acc"], log_epochs)
        if px:
            plt.scatter(px, py, color=hue, marker="•")
    last = max((max(xs) for xs, _ in series if xs), default=1)
    if log_epochs:
        _log_epoch_axis(last)
    else:
        plt.xticks(*round_ticks(max(last, 1), 4))
    _cursor_line(cursor, top, log_epochs)
    plt.ylim(0, top)
    return plt.build()


def compare_header(views: list[RunView], configs: list[dict]) -> Text:
    """One line per run for the compare screen's header: its letter in its hue, its name and the
    configuration values that differ between the compared runs (only those)."""
    from ibtui.tui.state import config_diff

    diff = config_diff(configs) if all(configs) else {}
    text = Text(no_wrap=True, overflow="ellipsis")
    for index, view in enumerate(views):
        r, g, b = run_hue(index)
        text.append(f"{run_letter(index)} ━━ ", style=f"bold rgb({r},{g},{b})")
        text.append(view.heading or "run", style="bold")
        text.append(f" · {view.status}", style="dim")
        if diff:
            text.append("  " + "  ".join(f"{key}={_value(values[index])}" for key, values in diff.items()))
        text.append("\n")
    if not all(configs):
        text.append("(a run has no readable config.toml: no configuration diff)", style="dim")
    elif not diff:
        text.append("the same configuration", style="dim")
    else:
        text.append("only the setting that differs" if len(diff) == 1 else f"only the {len(diff)} settings that differ",
                    style="dim")
    return text


def _value(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)
