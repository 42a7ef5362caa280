"""Publication figures of runs, with matplotlib (``pip install 'ibtui[plot]'``).

- :func:`information_plane`: the standard figure: I(X;T) against I(T;Y) in bits, one path per
  layer (its own marker), points coloured by **absolute** epoch on a log colour scale with a
  colour bar, H(X) and H(Y) marked; for KDE the other bound's path (dashed: the lower–upper
  extent of I(X;T); their I(T;Y) is a difference of bounds, not a bracket), for ensembles the
  ±1 sd spread of the members, the drift→diffusion epochs (◆) when the run recorded gradients.
  Several runs share the axes and the epoch scale, each with its own line style.
- :func:`small_multiples`: one panel per plane, per layer or per run.
- :func:`training_curves` and :func:`gradient_snr`: the per-epoch panels.
- :func:`save`: PNG, PDF or SVG, written atomically.

Every function takes runs (``ibtui.load_run`` results) or run directory paths; none imports
Textual or torch. Figures are built on ``matplotlib.figure.Figure`` (no GUI needed); pass ``ax``
to draw into your own axes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ibtui.errors import UserError
from ibtui.rundir.reader import PlaneData, Run, load_run

FORMATS = ("png", "pdf", "svg")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
RUN_STYLES = ("-", "--", ":", "-.")
RUN_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 200, 255), (255, 95, 175), (255, 200, 0), (120, 220, 120), (180, 140, 255), (255, 140, 60),
)
"""Each run's colour (RGB) where several runs share a plane: the same in the app's compare screen
and in these figures. Runs are lettered A, B, C, … in that order."""
RUN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CMAP = "viridis"


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("figures need matplotlib: pip install 'ibtui[plot]'") from None
    return matplotlib


def _runs(runs: Run | str | Path | Sequence[Run | str | Path]) -> list[Run]:
    if isinstance(runs, (Run, str, Path)):
        runs = [runs]
    return [r if isinstance(r, Run) else load_run(r) for r in runs]


def _figure(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def epoch_norm(last_epoch: int) -> Any:
    """The colour scale of epochs: log of (epoch + 1) from epoch 0 to ``last_epoch``, the same for
    every run on a figure (absolute epochs, not positions)."""
    _matplotlib()
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=1, vmax=max(2, last_epoch + 1))


def _colorbar(fig: Any, ax: Any, norm: Any, last_epoch: int) -> None:
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, pad=0.02)
    epochs = [e for e in (0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000) if e <= last_epoch]
    bar.set_ticks([e + 1 for e in epochs])  # the scale is log(epoch + 1): label the epochs themselves
    bar.set_ticklabels([str(e) for e in epochs])
    bar.minorticks_off()
    bar.set_label("epoch (log scale)")


def default_plane(run: Run) -> str:
    planes = run.planes
    if not planes:
        raise UserError(f"{run.id} has no measured plane yet")
    return planes[0]


def _transition_points(run: Run, data: PlaneData) -> list[int | None]:
    """Per layer, the measured epoch nearest the layer's drift→diffusion epoch (None if none)."""
    curves = run.curves
    layers = range(len(data.layers))
    if not curves or not all(f"grad_mean.{i}" in curves and f"grad_std.{i}" in curves for i in layers):
        return [None] * len(data.layers)
    from ibtui.engine.phases import transition_epochs

    mean = np.stack([curves[f"grad_mean.{i}"] for i in layers], axis=1)
    std = np.stack([curves[f"grad_std.{i}"] for i in layers], axis=1)
    found = transition_epochs([int(e) for e in curves["epoch"]], mean, std)
    if not len(data.epochs):
        return [None] * len(data.layers)
    return [None if e is None else int(np.argmin(np.abs(data.epochs - e))) for e in found]


def information_plane(runs: Run | str | Path | Sequence[Run | str | Path], plane: str | None = None,
                      ax: Any = None, layers: Sequence[int] | None = None, colorbar: bool = True,
                      legend: bool = True, title: str | None = None, until: int | None = None,
                      limits: tuple[tuple[float, float] | None, tuple[float, float] | None] | None = None) -> Any:
    """Draw the information plane of one or more runs (module docstring); returns the Figure.

    ``until``: only the measured epochs up to it (the app's cursor), on the same epoch colour scale
    as the whole run; ``limits``: (x range, y range) in bits, either None for the whole axis."""
    runs = _runs(runs)
    fig, ax = _figure(ax, (7.0, 5.0))
    last = max((int(r.plane(plane or default_plane(r)).epochs.max(initial=0)) for r in runs), default=1)
    norm = epoch_norm(last)
    h_x = max((r.meta.get("h_x") or 0.0 for r in runs), default=0.0)
    h_y = max((r.meta.get("h_y") or 0.0 for r in runs), default=0.0)
    notes: list[str] = []
    for index, run in enumerate(runs):
        name = plane or default_plane(run)
        data = run.plane(name)
        style = RUN_STYLES[index % len(RUN_STYLES)]
        several = len(runs) > 1
        path_colour = tuple(c / 255 for c in RUN_COLOURS[index % len(RUN_COLOURS)]) if several else "0.55"
        label_run = f"{RUN_LETTERS[index % len(RUN_LETTERS)]}: " if several else ""
        shown = list(layers) if layers is not None else list(range(len(data.layers)))
        other = _other_bound(run, name)
        marks = _transition_points(run, data)
        upto = len(data.epochs) if until is None else int(np.searchsorted(data.epochs, until, side="right"))
        x_all, y_all, epochs = data.ixt_mean[:upto], data.ity_mean[:upto], data.epochs[:upto]
        if other is not None:
            other_upto = len(other.epochs) if until is None else int(np.searchsorted(other.epochs, until, side="right"))
        marks = [m if m is not None and m < upto else None for m in marks]
        for layer in shown:
            marker = MARKERS[layer % len(MARKERS)]
            x, y = x_all[:, layer], y_all[:, layer]
            ax.plot(x, y, style, color=path_colour, linewidth=1.1 if several else 0.9, zorder=1)
            # several runs: one legend entry per layer (its marker) and one per run (its line), below
            ax.scatter(x, y, c=epochs + 1, cmap=CMAP, norm=norm, marker=marker, s=22, edgecolors="none",
                       zorder=3, label=data.layers[layer] if index == 0 or not several else "_nolegend_")
            if data.members > 1:
                sx = data.members_ixt[:upto, :, layer].std(axis=1, ddof=1)
                sy = data.members_ity[:upto, :, layer].std(axis=1, ddof=1)
                ax.errorbar(x, y, xerr=sx, yerr=sy, fmt="none", ecolor="0.75", elinewidth=0.6, zorder=2)
            if other is not None:
                ax.plot(other.ixt_mean[:other_upto, layer], other.ity_mean[:other_upto, layer], "--", color="0.35",
                        linewidth=0.7, zorder=1)
            if marks[layer] is not None:
                at = marks[layer]
                ax.scatter([x[at]], [y[at]], marker="D", s=70, facecolors="none", edgecolors="crimson", zorder=4)
        if data.members > 1:
            notes.append(f"{label_run}mean of {data.members} networks, bars ±1 sd")
        if other is not None:
            notes.append(f"{label_run}dashed: {other.name} (the other KDE bound; I(T;Y) of the bounds is a "
                         "difference of bounds, not a bracket)")
        if any(m is not None for m in marks):
            notes.append(f"{label_run}◆ drift→diffusion (gradient SNR below 1)")
    if len(runs) > 1:
        from matplotlib.lines import Line2D

        for index, run in enumerate(runs):
            ax.add_line(Line2D([], [], linestyle=RUN_STYLES[index % len(RUN_STYLES)],
                               color=tuple(c / 255 for c in RUN_COLOURS[index % len(RUN_COLOURS)]),
                               label=f"{RUN_LETTERS[index % len(RUN_LETTERS)]}: {run.id}"))
    if h_x:
        ax.axvline(h_x, color="0.3", linewidth=0.8, linestyle=":")
        ax.text(h_x, 0.02, " H(X)", transform=ax.get_xaxis_transform(), fontsize=8, color="0.3")
    if h_y:
        ax.axhline(h_y, color="0.3", linewidth=0.8, linestyle=":")
        ax.text(0.01, h_y, "H(Y)", transform=ax.get_yaxis_transform(), fontsize=8, color="0.3", va="bottom")
    ax.set_xlabel("I(X;T) (bits)")
    ax.set_ylabel("I(T;Y) (bits)")
    x_range, y_range = limits or (None, None)
    ax.set_xlim(*(x_range or (0, None)))
    ax.set_ylim(*(y_range or (0, None)))
    names = sorted({plane or default_plane(r) for r in runs})
    ax.set_title(title if title is not None else f"information plane: {', '.join(names)}"
                 + (f" · up to epoch {until}" if until is not None else ""), fontsize=11)
    if colorbar:
        _colorbar(fig, ax, norm, last)
    if legend:  # below the axes: never over the data
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(6 if len(runs) == 1 else 3, len(labels)),
                  fontsize=8, frameon=False, title="; ".join(dict.fromkeys(notes)) or None, title_fontsize=7)
    return fig


def _other_bound(run: Run, plane: str) -> PlaneData | None:
    """kde_lower for kde_upper and the reverse (same run), else None."""
    pairs = {"kde_upper": "kde_lower", "kde_lower": "kde_upper"}
    base, _, rest = plane.partition("[")
    partner = pairs.get(base)
    if partner is None:
        return None
    name = partner + (f"[{rest}" if rest else "")
    if name not in run.planes:
        return None
    data = run.plane(name)
    return data if len(data.epochs) else None


def small_multiples(runs: Run | str | Path | Sequence[Run | str | Path], by: str = "plane",
                    plane: str | None = None) -> Any:
    """A grid of information planes: one panel per plane of the first run (``by="plane"``), per layer
    (``"layer"``, every run overlaid) or per run (``"run"``), on one shared epoch colour scale."""
    runs = _runs(runs)
    _matplotlib()
    from matplotlib.figure import Figure

    if by == "plane":
        panels = [(name, dict(runs=runs[:1], plane=name)) for name in runs[0].planes]
    elif by == "layer":
        name = plane or default_plane(runs[0])
        panels = [(layer, dict(runs=runs, plane=name, layers=[i])) for i, layer in enumerate(runs[0].layers)]
    elif by == "run":
        panels = [(run.id, dict(runs=[run], plane=plane)) for run in runs]
    else:
        raise UserError(f"small multiples are by plane, layer or run; not {by!r}")
    if not panels:
        raise UserError("nothing to draw")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols + 1.0, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for (label, args), ax in zip(panels, axes.flat):
        information_plane(ax=ax, colorbar=False, legend=False, title=str(label), **args)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    last = max(int(r.plane(p).epochs.max(initial=0)) for r in runs for p in r.planes if len(r.plane(p).epochs))
    _colorbar(fig, axes, epoch_norm(last), last)
    return fig


def training_curves(run: Run | str | Path, ax: Any = None, log_epochs: bool = True) -> Any:
    """Loss (nats) and accuracy per epoch of one run; returns the Figure."""
    (run,) = _runs(run)
    curves = run.curves
    if not curves:
        raise UserError(f"{run.id} has no training curves")
    fig, ax = _figure(ax, (7.0, 4.0))
    epochs = curves["epoch"]
    for key, style in (("train_loss", "-"), ("test_loss", "--")):
        if key in curves:
            ax.plot(epochs, curves[key], style, color="tab:red", label=key.replace("_", " ") + " (nats)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats)")
    twin = ax.twinx()
    for key, style in (("train_acc", "-"), ("test_acc", "--")):
        if key in curves:
            twin.plot(epochs, curves[key], style, color="tab:blue", label=key.replace("_", " "))
    twin.set_ylabel("accuracy")
    twin.set_ylim(0, 1)
    if log_epochs:
        ax.set_xscale("log")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, frameon=False, loc="center right")
    ax.set_title(f"{run.id}: training curves")
    return fig


def gradient_snr(run: Run | str | Path, ax: Any = None) -> Any:
    """Per layer, the gradient signal-to-noise ratio ‖mean‖/‖std‖ per epoch (drift > 1 > diffusion),
    with the noise floor 1/sqrt(B − 1) of a minibatch mean; returns the Figure."""
    (run,) = _runs(run)
    curves = run.curves
    layers = [i for i in range(len(run.layers)) if f"grad_mean.{i}" in curves and f"grad_std.{i}" in curves]
    if not layers:
        raise UserError(f"{run.id} recorded no gradient statistics (train.gradient_stats)")
    fig, ax = _figure(ax, (7.0, 4.0))
    epochs = curves["epoch"]
    for i in layers:
        with np.errstate(divide="ignore", invalid="ignore"):
            ax.plot(epochs, curves[f"grad_mean.{i}"] / curves[f"grad_std.{i}"], label=run.layers[i])
    ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
    try:
        batch = int(run.config["train"]["batch_size"])
        if batch > 1:
            ax.axhline(1 / math.sqrt(batch - 1), color="0.6", linewidth=0.8, linestyle="--",
                       label=f"noise floor 1/sqrt(B−1), B = {batch}")
    except (KeyError, TypeError, ValueError, UserError):
        pass
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient SNR ‖mean‖ / ‖std‖")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"{run.id}: gradient signal-to-noise")
    return fig


def save(fig: Any, path: str | Path, fmt: str | None = None) -> Path:
    """Write a figure to ``path`` as PNG, PDF or SVG (from ``fmt`` or the suffix), atomically."""
    from ibtui.rundir.store import atomic_write_bytes

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
    if fmt not in FORMATS:
        raise UserError(f"figure format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=150, metadata={"Software": "ibtui"} if fmt == "png" else None)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
