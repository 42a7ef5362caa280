"""The run screen: information plane, skip schedule, training curves, status line and log.

One screen for live runs (fed by a worker process) and replays (fed from a run directory,
following it while it is still being written). State lives in :class:`RunView`.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from rich.markup import escape
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from ibtui.engine.process import Worker
from ibtui.errors import UserError
from ibtui.tui.live import LiveRun
from ibtui.tui.plots import (compare_curves_figure, compare_figure, compare_header, compare_key, curves_figure,
                             family_figure, plane_extent, plane_figure, plane_key, schedule_figure)
from ibtui.tui.state import (PlaneOptions, RunView, pan, parse_axis_range, plane_words, reset_zoom, view_config,
                             toggle_layer, toggle_log_epochs, zoom)
from ibtui.tui.widgets import AskScreen, ChoiceScreen, PlotView

REDRAW_S = 0.5  # status line and plots at most twice a second
LIVE_PLOT_S = 1.0  # plots of a live run at most once a second
FOLLOW_S = 1.0
PLAY_S = 0.15
COMPACT_ROWS = 32  # below this many rows the run screen drops its schedule plot


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def status_line(view: RunView, plane: str, cursor: int | None, paused: bool = False,
                family: str | None = None, layer: int = 0) -> str:
    rate = view.rate()
    layer_name = view.layers[layer] if 0 <= layer < len(view.layers) else f"layer {layer + 1}"
    parts = [
        f"[b]{view.status if not paused else 'paused'}[/b]",
        f"epoch {view.epochs_done}/{view.epochs_total}",
        (f"family [b]{escape(family)}[/b] · layer {escape(layer_name)} ([ ] to change, f back)" if family
         else f"estimator [b]{escape(plane)}[/b]" if plane else None),
        f"cursor {cursor}" if cursor is not None else None,
        f"{rate:,.1f} ep/s" if rate else None,
        f"ETA {fmt_seconds(view.eta())}" if view.running else None,
        f"{len(view.epochs)} measured",
        str(view.meta.get("device", "")) or None,
    ]
    line = " · ".join(p for p in parts if p)
    if view.error:
        line += f" · [red]{escape(view.error)}[/red]"
    return line


# ---------------------------------------------------------------------------- navigating a plane
NAV_BINDINGS = [
    Binding("p", "next_plane(1)", "Estimator"),
    Binding("P", "next_plane(-1)", "◀ Estimator", show=False),
    Binding("c", "choose_plane", "Choose estimator…"),
    *[Binding(str(n), f"toggle_layer({n - 1})", f"Layer {n} on/off", show=False) for n in range(1, 10)],
    Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", show=False),
    Binding("minus", "zoom(2.0)", "Zoom out", show=False),
    Binding("shift+left", "pan(-0.25, 0)", "Pan left", show=False),
    Binding("shift+right", "pan(0.25, 0)", "Pan right", show=False),
    Binding("shift+up", "pan(0, 0.25)", "Pan up", show=False),
    Binding("shift+down", "pan(0, -0.25)", "Pan down", show=False),
    Binding("0", "reset_zoom", "Reset zoom", show=False),
    Binding("z", "axis_range", "Axis range…", show=False),
    Binding("l", "log_epochs", "Log epochs (curves)", show=False),
]
"""Every screen showing a plane: the same keys (and palette entries, and ``?`` rows) to move
between planes, hide layers, zoom and put the curves' epochs on a log scale."""


class PlaneCommands(Provider):
    """Command palette entries "Estimator: <name>" for every plane the screen can show."""

    def _entries(self) -> list[tuple[str, str, object]]:
        screen = self.screen
        if not isinstance(screen, PlaneNavigation):
            return []
        return [(f"Estimator: {name}", plane_words(name), partial(screen.show_plane, name))
                for name in screen.nav_planes()]

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


class PlaneNavigation:
    """The actions of ``NAV_BINDINGS`` for a screen with ``plane`` and ``options`` (``PlaneOptions``):
    the state changes through the pure functions of ``ibtui.tui.state``; the screen redraws in
    ``nav_changed``."""

    plane: str
    options: PlaneOptions

    def nav_planes(self) -> list[str]:
        raise NotImplementedError

    def nav_views(self) -> list[RunView]:
        raise NotImplementedError

    def nav_changed(self) -> None:
        raise NotImplementedError

    def nav_layers(self) -> int:
        return max((len(v.layers) for v in self.nav_views()), default=0)

    def show_plane(self, name: str) -> None:
        if name in self.nav_planes():
            self.plane = name
            self.nav_changed()

    def action_next_plane(self, delta: int = 1) -> None:
        names = self.nav_planes()
        if names:
            index = names.index(self.plane) + delta if self.plane in names else 0
            self.show_plane(names[index % len(names)])

    def action_choose_plane(self) -> None:
        names = self.nav_planes()
        if not names:
            return
        choices = [(name, f"{name}  ({plane_words(name)})") for name in names]

        def chosen(name: str | None) -> None:
            if name is not None:
                self.show_plane(name)

        self.app.push_screen(ChoiceScreen("Show which estimator's plane?", choices, self.plane), chosen)

    def action_toggle_layer(self, layer: int) -> None:
        self.options = toggle_layer(self.options, layer, self.nav_layers())
        self.nav_changed()

    def _extent(self) -> tuple[float, float]:
        return plane_extent(self.nav_views(), self.plane)

    def action_zoom(self, factor: float) -> None:
        self.options = zoom(self.options, *self._extent(), factor)
        self.nav_changed()

    def action_pan(self, dx: float, dy: float) -> None:
        self.options = pan(self.options, *self._extent(), dx, dy)
        self.nav_changed()

    def action_reset_zoom(self) -> None:
        self.options = reset_zoom(self.options)
        self.nav_changed()

    def action_log_epochs(self) -> None:
        self.options = toggle_log_epochs(self.options)
        self.nav_changed()

    def action_axis_range(self) -> None:
        def answer(text: str | None) -> None:
            if text is None:
                return
            try:
                self.options = parse_axis_range(text, self.options)
            except ValueError as exc:
                self.notify(str(exc), title="axis range", severity="error", markup=False)
                return
            self.nav_changed()

        x0, x1 = self.options.x or (0.0, self._extent()[0])
        y0, y1 = self.options.y or (0.0, self._extent()[1])
        self.app.push_screen(AskScreen("Axis ranges in bits (empty or reset: the whole plane); Enter applies",
                                       f"x={x0:.3g}:{x1:.3g} y={y0:.3g}:{y1:.3g}", "x=0:6 y=0:1"), answer)


class RunScreen(PlaneNavigation, Screen):
    """Live run or replay of one run directory."""

    COMMANDS = {PlaneCommands}
    BINDINGS = [
        Binding("space", "toggle", "Pause/Play"),
        Binding("s", "stop", "Stop run"),
        Binding("e", "export", "Export"),
        *NAV_BINDINGS,
        Binding("f", "family", "Family"),
        Binding("left_square_bracket", "layer(-1)", "◀ layer", show=False),
        Binding("right_square_bracket", "layer(1)", "▶ layer", show=False),
        Binding("left", "step(-1)", "◀ epoch", show=False),
        Binding("right", "step(1)", "▶ epoch", show=False),
        Binding("home", "jump(0)", "First epoch", show=False),
        Binding("end", "jump(-1)", "Last epoch", show=False),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, view: RunView, worker: Worker | None = None, follow: bool | None = None,
                 live: LiveRun | None = None) -> None:
        super().__init__()
        self.view = view
        # a live run is the app's (``LiveRun``): it keeps going, and its view growing, after esc
        self.live_run = live if live is not None else (LiveRun(worker, view) if worker is not None else None)
        self.worker = worker if worker is not None else (live.worker if live is not None else None)
        self.follow = (self.worker is None) if follow is None else follow
        self.plane = view.plane_names[0] if view.plane_names else ""
        view.shown_plane = self.plane or None
        self.options = PlaneOptions()
        self.family: str | None = None  # an analysis family shown instead of one plane (key f)
        self.family_layer = max(0, len(view.layers) - 2)  # the family view's layer: the last hidden one
        self.cursor: int | None = None  # None = follow the latest epoch
        self.playing = False
        self._log_seen = 0
        self._status_stale = False
        self._plots_at = 0.0

    @property
    def live(self) -> bool:
        return self.worker is not None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        view = self.view
        with Horizontal(id="body"):
            yield PlotView(self.main_figure, self.stamp, id="plane")
            with Vertical(id="side"):
                yield Static(id="key")
                yield PlotView(lambda w, h: schedule_figure(view, w, h, self.cursor),
                               lambda: (view.plane_version, self.cursor), id="schedule")
                yield PlotView(lambda w, h: curves_figure(view, w, h, self.cursor, self.options.log_epochs),
                               self.curves_stamp, id="curves")
        yield Static(id="status")
        log = RichLog(id="log", max_lines=500, wrap=False, markup=False)
        log.can_focus = False  # arrows, Home and End move the epoch cursor, not the log
        yield log
        yield Footer()

    def on_resize(self, event: events.Resize) -> None:
        """A short terminal (under ``COMPACT_ROWS``) hides the schedule so the key keeps every layer."""
        self.set_class(event.size.height < COMPACT_ROWS, "compact")

    def on_mount(self) -> None:
        self.title = "ibtui"
        self.set_class(self.app.size.height < COMPACT_ROWS, "compact")
        self.sub_title = self.view.heading or ("live run" if self.live else "replay")
        self.set_interval(REDRAW_S, self.tick)
        if self.live_run is not None:
            self.live_run.listen(self.on_live_events)
            self.live_run.start(self.app)  # a run the app launched drains already
        elif self.follow:
            self.set_interval(FOLLOW_S, self.poll_disk)
        self.set_interval(PLAY_S, self.play_tick)
        self.update_status()
        self.update_key()
        self.flush_log()

    # ------------------------------------------------------------------ feeding
    def on_unmount(self) -> None:
        if self.live_run is not None:
            self.live_run.unlisten(self.on_live_events)

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        """Fold worker events into the run (through its ``LiveRun``: the app's state) and show them."""
        if self.live_run is not None:
            self.live_run.deliver(events)

    def on_live_events(self, events: list[dict[str, Any]], was_running: bool, was_status: str) -> None:
        """The live run folded ``events`` into the view: show what changed."""
        if not self.is_attached or not self.query("#status"):  # closed (or closing) while the drain thread posted
            return
        for event in events:
            if event.get("type") == "error" and event.get("traceback"):
                self.query_one("#log", RichLog).write(event["traceback"])
        if not self.plane and self.view.plane_names:
            self.plane = self.view.plane_names[0]
            self.view.shown_plane = self.plane
        if self.sub_title != self.view.heading:
            self.sub_title = self.view.heading
        if was_running != self.view.running:
            self.refresh_bindings()
        if was_status != self.view.status:  # started, ended: at once, with the log so far
            self.update_status()
            self.flush_log()
        else:  # every epoch's event: the status line and the log follow at the redraw rate (twice a second)
            self._status_stale = True

    def poll_disk(self) -> None:
        new_events = self.view.follow()
        if self.view.refresh_meta() or new_events:  # the run's end shows as soon as meta.json says so
            self.update_status()
        self.flush_log()

    # ------------------------------------------------------------------ drawing
    def main_figure(self, width: int, height: int) -> str:
        if self.family is not None:
            return family_figure(self.view, self.family, self.family_layer, width, height, self.cursor)
        return plane_figure(self.view, self.plane, width, height, self.cursor, self.options)

    def stamp(self) -> tuple:
        return (self.view.plane_version, self.plane, self.cursor, self.family, self.family_layer, self.options)

    def curves_stamp(self) -> tuple:
        """The curves change every epoch: while the run trains, redraw them once a second at most."""
        return ((len(self.view.curves["epoch"]), self.view.status) if not self.view.running else
                (int(time.monotonic()), self.view.status)) + (self.cursor, self.options.log_epochs)

    def redraw(self, plots: bool = True) -> None:
        """Repaint what changed: the status line and log, and with ``plots`` the plots (keys call this at once)."""
        if self._status_stale:
            self.update_status()
            self.flush_log()
        if plots:
            for plot in self.query("PlotView"):
                plot.refresh_if_stale()
            self.update_key()

    def update_key(self) -> None:
        """The plane's key beside it: layers with their numbers at the shown epoch, the epoch scale,
        the overlays (``plane_key``); rebuilt when what the plane shows changed."""
        stamp = self.stamp()
        if stamp == getattr(self, "_key_stamp", None):
            return
        self._key_stamp = stamp
        plane = self.plane if self.family is None else (self.view.family_planes(self.family) or [self.plane])[0]
        self.query_one("#key", Static).update(plane_key(self.view, plane, self.cursor, self.options))

    def tick(self) -> None:
        """The redraw timer: the status line and log twice a second; while a run is live, the plots
        once a second (each costs a plotext figure; the engine shares the machine)."""
        now = time.monotonic()
        plots = not (self.live and self.view.running) or now - self._plots_at >= LIVE_PLOT_S
        if plots:
            self._plots_at = now
        self.redraw(plots)

    def update_status(self) -> None:
        self._status_stale = False
        paused = bool(self.worker and self.worker.paused and self.view.running)
        self.query_one("#status", Static).update(  # one line, fixed height: no layout pass (it repaints the screen)
            status_line(self.view, self.plane, self.cursor, paused, self.family, self.family_layer), layout=False)

    def flush_log(self) -> None:
        if self._log_seen == self.view.log_count:
            return
        lines = self.view.new_log_lines(self._log_seen)
        self._log_seen = self.view.log_count
        log = self.query_one("#log", RichLog)
        for line in lines:
            log.write(line)

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.live and self.view.running
        return True

    def action_toggle(self) -> None:
        """Live: pause or resume the worker. Replay: play or pause the epoch animation."""
        if self.live and self.view.running:
            assert self.worker is not None
            self.worker.pause(not self.worker.paused)
            self.view.add_log("paused" if self.worker.paused else "resumed")
        else:
            epochs = self.view.epochs
            if not epochs:
                return
            if not self.playing and (self.cursor is None or self.cursor >= epochs[-1]):
                self.cursor = epochs[0]
            self.playing = not self.playing
        self.update_status()
        self.flush_log()

    def play_tick(self) -> None:
        if self.playing:
            self.action_step(1)
            if self.cursor is None or self.cursor >= self.view.epochs[-1]:
                self.playing = False

    def action_stop(self) -> None:
        if self.worker is not None and self.view.running:
            self.worker.stop()
            self.view.add_log("stop requested: finishing the current epoch")
            self.flush_log()

    # ------------------------------------------------------------------ navigation (PlaneNavigation)
    def nav_planes(self) -> list[str]:
        return self.view.plane_names

    def nav_views(self) -> list[RunView]:
        return [self.view]

    def show_plane(self, name: str) -> None:
        if name in self.nav_planes() and name != self.plane:
            self.view.add_log(f"showing {name}: {plane_words(name)}")
            self.view.shown_plane = name
        super().show_plane(name)

    def nav_changed(self) -> None:
        self.update_status()
        self.flush_log()
        self.redraw()

    def action_family(self) -> None:
        """Show every parameter value of an analysis family for one layer, or go back to one plane."""
        if self.family is not None:
            self.family = None
        elif not self.view.families:
            self.view.add_log("no analysis families: run `ibtui analyze RUN --estimator ... --bins ...` first")
            self.flush_log()
            return
        else:
            self.family = self.view.family_of(self.plane) or next(iter(self.view.families))
        self.update_status()
        self.redraw()

    def action_layer(self, delta: int) -> None:
        n = len(self.view.layers)
        if n:
            self.family_layer = (self.family_layer + delta) % n
            self.update_status()
            self.redraw()

    def action_step(self, delta: int) -> None:
        epochs = self.view.epochs
        if not epochs:
            return
        current = self.view.at_or_before(self.cursor) if self.cursor is not None else epochs[-1]
        index = epochs.index(current if current is not None else epochs[0])
        self.cursor = epochs[max(0, min(len(epochs) - 1, index + delta))]
        self.update_status()
        self.redraw()

    def action_jump(self, where: int) -> None:
        epochs = self.view.epochs
        if epochs:
            self.cursor = epochs[0] if where == 0 else None
            self.playing = False
            self.update_status()
            self.redraw()

    def action_export(self) -> None:
        """Export what is on screen (the plane, or the family's planes, with the shown layers, up to
        the cursor epoch, in the zoomed ranges) through ``ibtui.export``: CSV (every epoch) and the
        publication figure (PNG, PDF; matplotlib) into ``<run>/export/``."""
        from ibtui.export import export, run_export_dir
        from ibtui.rundir.reader import load_run

        if not self.view.run_dir:
            self.notify("nothing to export yet", severity="warning")
            return
        shown = [self.plane] if self.family is None else self.view.family_planes(self.family)
        paths, skipped = [], []
        try:
            run = load_run(self.view.run_dir)
            out_dir = run_export_dir(run)
            for plane in shown:
                layers = self.options.visible(len(self.view.layers)) if self.options.hidden else None
                until = self.view.at_or_before(self.cursor) if self.cursor is not None else None
                stem = None if until is None else f"{safe(run.id)}-{safe(plane)}-epoch{until}"
                result = export([run], out_dir, plane=plane, formats=("csv", "png", "pdf"), layers=layers,
                                until=until, limits=(self.options.x, self.options.y), stem=stem)
                paths += result.paths
                skipped += [s for s in result.skipped if s not in skipped]
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        names = ", ".join(p.name for p in paths)
        self.view.add_log(f"exported {names} to {out_dir}" + (f"; skipped {'; '.join(skipped)}" if skipped else ""))
        self.flush_log()
        self.notify(f"exported to {out_dir}: {names}" + (f" (skipped {'; '.join(skipped)})" if skipped else ""),
                    title="export")

    def action_back(self) -> None:
        self.app.pop_screen()  # to whatever opened it: home, or a sweep


class CompareScreen(PlaneNavigation, Screen):
    """Two or more runs (or sweep cells) overlaid on one information plane, with shared axes, one
    absolute epoch scale and one cursor; each run in its own hue; their loss and accuracy beside;
    the settings that differ between them in the header; a key naming runs and layers outside
    the plot."""

    COMMANDS = {PlaneCommands}
    BINDINGS = [
        *NAV_BINDINGS,
        Binding("left", "step(-1)", "◀ epoch"),
        Binding("right", "step(1)", "▶ epoch"),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("e", "export", "Export"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, views: list[RunView]) -> None:
        super().__init__()
        self.views = views
        common = [p for p in views[0].plane_names if all(p in v.plane_names for v in views[1:])]
        self.planes = common or views[0].plane_names
        self.plane = self.planes[0] if self.planes else ""
        self.options = PlaneOptions()
        self.cursor: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="compare-header")
        with Horizontal(id="compare"):
            yield PlotView(self.draw_plane, self.stamp, id="compare-plane")
            with Vertical(id="compare-side"):
                yield Static(id="compare-key")
                yield PlotView(self.draw_curves, self.stamp, id="compare-curves")
        yield Static(id="status")
        yield Footer()

    def draw_plane(self, width: int, height: int) -> str:
        return compare_figure(self.views, self.plane, width, height, self.cursor, self.options)

    def draw_curves(self, width: int, height: int) -> str:
        return compare_curves_figure(self.views, width, height, self.cursor, self.options.log_epochs)

    def stamp(self) -> tuple:
        return (self.plane, self.cursor, self.options, *[v.plane_version for v in self.views])

    def on_mount(self) -> None:
        self.sub_title = " vs ".join(v.heading for v in self.views)
        self.query_one("#compare-header", Static).update(compare_header(self.views, [view_config(v) for v in self.views]))
        self.set_interval(FOLLOW_S, self.poll)
        self.update_status()
        self.update_key()

    def poll(self) -> None:
        changed = False
        for view in self.views:
            changed |= bool(view.follow()) | view.refresh_meta()
        if changed:  # the measured counts in the status line follow runs still being written
            self.update_status()
            self.update_key()
        self.refresh_plots()

    def refresh_plots(self) -> None:
        for plot in self.query("PlotView"):
            plot.refresh_if_stale()

    def update_key(self) -> None:
        self.query_one("#compare-key", Static).update(compare_key(self.views, self.plane, self.cursor, self.options))

    def update_status(self) -> None:
        self.query_one("#status", Static).update(
            f"estimator [b]{escape(self.plane)}[/b] · cursor {self.cursor if self.cursor is not None else 'latest'} · "
            + " · ".join(f"{escape(v.heading)}: {len(v.epochs)} measured" for v in self.views))

    def all_epochs(self) -> list[int]:
        return sorted({e for v in self.views for e in v.epochs})

    # ------------------------------------------------------------------ navigation (PlaneNavigation)
    def nav_planes(self) -> list[str]:
        return self.planes

    def nav_views(self) -> list[RunView]:
        return self.views

    def nav_changed(self) -> None:
        self.update_status()
        self.update_key()
        self.refresh_plots()

    def action_step(self, delta: int) -> None:
        epochs = self.all_epochs()
        if not epochs:
            return
        index = epochs.index(self.cursor) if self.cursor in epochs else len(epochs) - 1
        self.cursor = epochs[max(0, min(len(epochs) - 1, index + delta))]
        self.nav_changed()

    def action_jump(self, where: int) -> None:
        epochs = self.all_epochs()
        self.cursor = (epochs[0] if epochs else None) if where == 0 else None
        self.nav_changed()

    def action_export(self) -> None:
        """Export the overlay on screen (every run on shared axes, the plane, the shown layers, up to
        the cursor epoch, in the zoomed ranges) through ``ibtui.export`` into the first run's ``export/``."""
        from ibtui.export import export, run_export_dir
        from ibtui.rundir.reader import load_run

        try:
            runs = [load_run(v.run_dir) for v in self.views if v.run_dir]
            if len(runs) != len(self.views):
                raise UserError("a compared run has no directory yet")
            out_dir = run_export_dir(runs[0])
            n_layers = self.nav_layers()
            layers = self.options.visible(n_layers) if self.options.hidden else None
            result = export(runs, out_dir, plane=self.plane, formats=("png", "pdf"), layers=layers,
                            until=self.cursor, limits=(self.options.x, self.options.y),
                            stem="compare-" + "-".join(safe(r.id) for r in runs[:4]) + f"-{safe(self.plane)}"
                            + (f"-epoch{self.cursor}" if self.cursor is not None else ""))
        except UserError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        names = ", ".join(p.name for p in result.paths) or "nothing"
        skipped = f" (skipped {'; '.join(result.skipped)})" if result.skipped else ""
        self.notify(f"exported to {out_dir}: {names}{skipped}", title="export", markup=False)

    def action_back(self) -> None:
        self.app.pop_screen()  # to whatever opened it: home, or a sweep


def safe(name: str) -> str:
    from ibtui.export import safe_name

    return safe_name(name)
