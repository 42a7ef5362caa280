"""A sweep: its cells in a table with status and results, and a grid of small information planes.

The screen only routes: the state is a ``SweepView`` (``ibtui.tui.state``) re-read from disk every
second, so a sweep still running in another terminal (or on a cluster) is followed live.
"""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ibtui.tui.plots import empty_figure, plane_figure
from ibtui.tui.run_screen import FOLLOW_S, CompareScreen, RunScreen
from ibtui.tui.state import SweepCell, SweepView
from ibtui.tui.widgets import PlotView


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def cell_label(cell: SweepCell) -> str:
    """``activation=relu, bin_size=0.3`` (the last part of each grid key)."""
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cell.overrides.items()) or cell.name


class SweepScreen(Screen):
    """Cells of one sweep; Enter (or o) opens the highlighted cell's run."""

    BINDINGS = [
        Binding("o", "open_cell", "Open cell"),
        Binding("m", "mark_cell", "Mark cell"),
        Binding("c", "compare", "Compare marked cells (all when none)"),
        Binding("p", "next_plane", "Estimator"),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, view: SweepView) -> None:
        super().__init__()
        self.view = view
        self.plane = view.plane_names[0] if view.plane_names else ""
        self.marked: list[str] = []  # cell names, in the order they were marked

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="cells", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="minis"):
            with Grid(id="mini-grid"):
                for cell in self.view.cells:
                    yield PlotView(self._drawer(cell), self._stamp, id=f"mini-{self.view.cells.index(cell)}")
        yield Static(id="status")
        yield Footer()

    def _stamp(self) -> tuple:
        return self.view.version, self.plane

    def _drawer(self, cell: SweepCell):
        def draw(width: int, height: int) -> str:
            index = self.view.cells.index(cell)
            title = f"{index} {cell_label(cell)} · {cell.status}"[:max(width, 1)]
            if cell.view is None or self.plane not in cell.view.planes or not cell.view.planes[self.plane]:
                return f"{title}\n{empty_figure(width, height - 1, cell.error or cell.status)}"
            return f"{title}\n{plane_figure(cell.view, self.plane, width, height - 1)}"
        return draw

    def on_mount(self) -> None:
        self.title = "ibtui"
        self.sub_title = f"sweep {self.view.sweep_id}"
        table = self.query_one("#cells", DataTable)
        keys = [Text(k.split(".")[-1]) for k, _ in self.view.grid]  # text from sweep.json: never markup
        table.add_columns("#", *keys, "status", "tries", "test acc", "peak I(X;T)", "final", "drop")
        self.fill_table()
        self.set_interval(FOLLOW_S, self.poll)
        table.focus()

    def fill_table(self) -> None:
        table = self.query_one("#cells", DataTable)
        row = table.cursor_row
        table.clear()
        for index, cell in enumerate(self.view.cells):
            peak, final = self.view.peak_and_final(cell, self.plane)
            drop = None if peak is None or final is None else peak - final
            cells = [f"{index}{'*' if cell.name in self.marked else ''}",
                     *(str(cell.overrides.get(k, "")) for k, _ in self.view.grid), cell.status,
                     "–" if cell.attempts is None else str(cell.attempts), fmt(cell.test_acc, 3),
                     fmt(peak), fmt(final), fmt(drop)]
            table.add_row(*(Text(c) for c in cells), key=cell.name)  # text read from disk: never markup
        if row is not None and self.view.cells:
            table.move_cursor(row=min(row, len(self.view.cells) - 1))
        self.update_status()

    def update_status(self) -> None:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.view.counts().items()))
        self.query_one("#status", Static).update(
            f"{len(self.view.cells)} cells: {escape(counts)} · estimator [b]{escape(self.plane or '–')}[/b] "
            f"(I(X;T) of the last hidden layer, bits; ensembles: mean of each network's own) · {escape(str(self.view.root))}")

    def poll(self) -> None:
        if self.view.refresh():
            if not self.plane and self.view.plane_names:
                self.plane = self.view.plane_names[0]
            self.fill_table()
            for plot in self.query(PlotView):
                plot.refresh_if_stale()

    def selected(self) -> SweepCell | None:
        row = self.query_one("#cells", DataTable).cursor_row
        return self.view.cells[row] if row is not None and 0 <= row < len(self.view.cells) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_cell()

    def action_open_cell(self) -> None:
        cell = self.selected()
        if cell is None or cell.view is None:
            self.notify("this cell has not started yet", severity="warning")
            return
        self.app.push_screen(RunScreen(cell.view))

    def action_mark_cell(self) -> None:
        cell = self.selected()
        if cell is None:
            return
        if cell.name in self.marked:
            self.marked.remove(cell.name)
        else:
            self.marked.append(cell.name)
        self.fill_table()

    def action_compare(self) -> None:
        """The marked cells (every started cell when none is marked) overlaid on one plane."""
        chosen = [c for name in self.marked for c in self.view.cells if c.name == name] or self.view.cells
        views = [c.view for c in chosen if c.view is not None]
        if len(views) < 2:
            self.notify("mark two started cells with m first", severity="warning")
            return
        self.app.push_screen(CompareScreen(views))

    def action_next_plane(self) -> None:
        names = self.view.plane_names
        if names:
            self.plane = names[(names.index(self.plane) + 1) % len(names)] if self.plane in names else names[0]
            self.fill_table()
            for plot in self.query(PlotView):
                plot.refresh_if_stale()

    def action_refresh(self) -> None:
        self.view.refresh()
        self.fill_table()

    def action_back(self) -> None:
        self.app.pop_screen()
