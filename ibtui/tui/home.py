"""Home screen: presets, a form of the common settings, and the runs already on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, OptionList, Select
from textual.widgets.option_list import Option

from ibtui.config import ACTIVATIONS, OPTIMIZERS, SCHEDULES, Config, available_presets, load_preset, preset_description
from ibtui.errors import UserError
from ibtui.runinfo import described, run_info
from ibtui.tui.state import LIVE_STATUSES, RESUMABLE, filter_rows, list_runs, run_table

RUNS_POLL_S = 2.0  # the run list follows runs still going at this interval


@dataclass(frozen=True)
class Field:
    """One form field: its override key and how to read it from a resolved Config."""

    key: str
    label: str
    choices: tuple[str, ...] = ()


RUN_FIELDS = [Field("run.name", "run name (in the run list)"), Field("run.tags", "tags, comma-separated"),
              Field("run.note", "note")]
"""What tells the run apart (meta.json, not the configuration)."""

FIELDS = [
    *RUN_FIELDS,
    Field("data.dataset", "dataset: 12bit, mnist, mat:PATH, …"),
    Field("model.activation", "activation", ACTIVATIONS),
    Field("model.widths", "hidden widths"),
    Field("estimators", "estimators, comma-separated"),
    Field("estimators.binning.bin_size", "binning: bin size"),
    Field("estimators.binning_fixed.bins", "binning_fixed: number of edges"),
    Field("estimators.kde.noise_variance", "kde: noise variance σ²"),
    Field("schedule.kind", "epoch schedule", SCHEDULES),
    Field("train.epochs", "epochs"),
    Field("train.optimizer", "optimiser", OPTIMIZERS),
    Field("train.lr", "learning rate"),
    Field("train.batch_size", "batch size"),
    Field("train.seed", "seed"),
    Field("train.seeds", "networks trained together (ensemble)"),
    Field("train.device", "device", ("auto", "cpu", "cuda"))]


def field_id(key: str) -> str:
    return "f-" + key.replace(".", "-").replace("_", "-")


def current_value(cfg: Config, key: str) -> str:
    """The text a form field shows for ``key`` in a resolved config ('' when not applicable)."""
    if key.startswith("run."):
        return ""
    if key == "estimators":
        return ",".join(cfg.estimators)
    parts = key.split(".")
    if parts[0] == "estimators":
        est = cfg.estimators.get(parts[1])
        return "" if est is None else str(getattr(est, parts[2]))
    value = getattr(getattr(cfg, parts[0]), parts[1])
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def form_overrides(cfg: Config, values: dict[str, str]) -> list[str]:
    """``--set`` overrides for the fields whose text differs from the preset's value (UserError for a
    value of an estimator that is not selected: it would be dropped)."""
    overrides: list[str] = []
    wanted = [e.strip() for e in values.get("estimators", "").split(",") if e.strip()]
    if "estimators" in values and wanted != list(cfg.estimators):
        for name in cfg.estimators:
            if name not in wanted:
                overrides.append(f"estimators.{name}=false")
        for name in wanted:
            overrides.append(f"estimators.{name}=true")
    for key, text in values.items():
        if key == "estimators" or key.startswith("run.") or text.strip() == current_value(cfg, key):
            continue
        parts = key.split(".")
        if parts[0] == "estimators" and not text.strip():
            continue
        if parts[0] == "estimators" and parts[1] not in wanted:
            raise UserError(f"{key} is set but {parts[1]} is not among the estimators: "
                            f"add {parts[1]} to them or clear the field")
        value = text.strip()
        if key in ("data.dataset", "model.activation", "schedule.kind", "train.device", "train.optimizer"):
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        overrides.append(f"{key}={value}")
    return overrides


def launch_info(preset: Config, cfg: Config, values: dict[str, str]) -> dict:
    """meta.json's name, tags, note and overrides of ``preset`` for a launch of ``cfg`` from the form
    (UserError for a bad name, tag or note); ``cfg``'s description led by the run's label."""
    info = run_info(preset.to_dict(), cfg.to_dict(), values.get("run.name") or None,
                    [values.get("run.tags", "")], values.get("run.note") or None)
    cfg.description = described(cfg.description, cfg.preset, info["overrides"])
    return info


class HomeScreen(Screen):
    BINDINGS = [
        Binding("l", "launch", "Launch"),
        Binding("o", "open_run", "Open run"),
        Binding("m", "mark", "Mark run"),
        Binding("c", "compare", "Compare marked"),
        Binding("s", "stop_run", "Stop run"),
        Binding("u", "resume_run", "Resume run"),
        Binding("slash", "filter", "Filter runs"),
        Binding("r", "refresh_runs", "Refresh runs"),
        Binding("ctrl+r", "reset_form", "Reset the form to the preset"),
        Binding("escape", "leave_form", "Leave the form (keys act again)", show=False),
    ]

    def __init__(self, runs_dir: str = "runs") -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.presets = available_presets()
        self.preset = "quick" if "quick" in self.presets else next(iter(self.presets), "")
        self.cfg: Config | None = None
        self.load_error: str | None = None  # why the highlighted preset does not load
        self.marked: list[str] = []
        self.rows: list[dict] = []  # the listed runs (list_runs, filtered), in table order
        self.all_rows: list[dict] = []  # every run on disk (list_runs)
        self.query_text = ""  # the run list's filter (/)
        self.columns: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="home-top"):
            with Vertical(id="presets-box"):
                yield Label("Presets", classes="section")
                yield OptionList(*[Option(f"{escape(name)}\n[dim]{escape(preset_description(path))}[/dim]", id=name)
                                   for name, path in self.presets.items()], id="presets")
            with VerticalScroll(id="form"):
                yield Label("Settings (l launches)", classes="section")
                for f in FIELDS:
                    yield Label(f.label, classes="field-label")
                    if f.choices:
                        yield Select([(c, c) for c in f.choices], id=field_id(f.key), allow_blank=False, compact=True)
                    else:
                        yield Input(id=field_id(f.key), compact=True)
        yield Label(self.runs_title(), id="runs-title", classes="section")
        yield Input(placeholder="filter runs by name, preset, tag, status (enter or esc: back to the list)",
                    id="runs-filter", compact=True)
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Label("", id="runs-hint")
        yield Footer()

    def runs_title(self) -> str:
        shown = f" · filter '{escape(self.query_text)}': {len(self.rows)} of {len(self.all_rows)}" \
            if self.query_text else ""
        return f"Runs in {escape(self.runs_dir)}/ (o opens, m marks, c compares, s stops, u resumes, / filters){shown}"

    def on_mount(self) -> None:
        self.title = "ibtui"
        self.sub_title = "home"
        self.action_refresh_runs()
        self.set_interval(RUNS_POLL_S, self.poll_runs)
        options = self.query_one("#presets", OptionList)
        if self.preset:
            options.highlighted = list(self.presets).index(self.preset)
            self.fill_form(self.preset)
        options.focus()

    def on_screen_resume(self) -> None:
        self.action_refresh_runs()
        self.action_leave_form()  # back from a run: the screen's keys work, not typing into a field

    def action_leave_form(self) -> None:
        if self.focused is self.query_one("#runs-filter", Input):
            self.query_one("#runs", DataTable).focus()
            return
        self.query_one("#presets", OptionList).focus()

    def action_reset_form(self) -> None:
        """Put the highlighted preset's values back in every field (run name, tags, note emptied)."""
        if self.preset:
            self.fill_form(self.preset)
            self.notify(f"form reset to preset {escape(self.preset)}")

    def action_filter(self) -> None:
        """Show the filter field of the run list (its text filters as you type)."""
        field = self.query_one("#runs-filter", Input)
        field.add_class("shown")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "runs-filter":
            self.query_text = event.value.strip()
            self.show_runs(self.all_rows)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "runs-filter":
            self.query_one("#runs", DataTable).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self.fill_form(event.option.id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one(f"#{field_id(FIELDS[0].key)}").focus()

    def fill_form(self, name: str) -> None:
        try:
            cfg = load_preset(name)
        except UserError as exc:  # nothing launches until a preset that loads is highlighted
            self.preset, self.cfg, self.load_error = name, None, f"preset {name}: {exc}"
            self.notify(str(exc), severity="error")
            return
        self.preset, self.cfg, self.load_error = name, cfg, None
        for f in FIELDS:
            widget = self.query_one(f"#{field_id(f.key)}")
            value = current_value(cfg, f.key)
            if isinstance(widget, Select):
                if value not in f.choices:
                    widget.set_options([(c, c) for c in (*f.choices, value)])
                widget.value = value
            else:
                widget.value = value

    def form_values(self) -> dict[str, str]:
        values = {}
        for f in FIELDS:
            widget = self.query_one(f"#{field_id(f.key)}")
            values[f.key] = str(widget.value) if widget.value is not None else ""
        return values

    def resolved_config(self) -> Config | None:
        """The preset with the form's changes applied, or None (with an error shown)."""
        if self.cfg is None:
            if self.load_error:
                self.notify(self.load_error, title="cannot launch", severity="error")
            else:
                self.notify("pick a preset first", severity="warning")
            return None
        runs_dir = f"store.runs_dir={json.dumps(self.runs_dir)}"  # where this screen lists runs
        try:
            return load_preset(self.preset, [*form_overrides(self.cfg, self.form_values()), runs_dir])
        except UserError as exc:
            self.notify(str(exc), title="cannot launch", severity="error")
            return None

    def launch_info(self, cfg: Config) -> dict | None:
        """The form's name, tags and note with the overrides (``launch_info``), or None (error shown)."""
        assert self.cfg is not None
        try:
            return launch_info(self.cfg, cfg, self.form_values())
        except UserError as exc:
            self.notify(str(exc), title="cannot launch", severity="error")
            return None

    # ------------------------------------------------------------------ runs
    def action_refresh_runs(self) -> None:
        self.show_runs(list_runs(self.runs_dir))

    def show_runs(self, rows: list[dict]) -> None:
        """Fill the table with ``rows`` (every run on disk) as the filter lets through; the columns
        are those of ``run_table`` (config keys that differ between the runs shown); the cursor
        stays on the run it was on. Text from the runs is shown as text (never as markup)."""
        table = self.query_one("#runs", DataTable)
        selected = self.selected_run()
        self.all_rows = rows
        self.rows = filter_rows(rows, self.query_text)
        headers, cells = run_table(self.rows)
        if headers != self.columns:
            table.clear(columns=True)
            table.add_column("", width=1)  # the mark (m): its width is fixed, so a new star shows at once
            table.add_columns(*headers)
            self.columns = headers
        else:
            table.clear()
        for r, row in zip(self.rows, cells):
            table.add_row("*" if r["path"] in self.marked else "", *(Text(c) for c in row), key=r["path"])
        if selected in self.run_paths:
            table.move_cursor(row=self.run_paths.index(selected))
        self.query_one("#runs-title", Label).update(self.runs_title())
        hint = ("no runs yet — press l to launch one" if not rows else
                f"no run matches '{self.query_text}' — / changes the filter" if not self.rows else "")
        self.query_one("#runs-hint", Label).update(Text(hint))
        self.query_one("#runs-hint", Label).display = bool(hint)

    def poll_runs(self) -> None:
        """While a listed run or sweep is still going, follow its status and epochs on disk (only
        while this screen is shown: under a live run's screen it would compete with that run)."""
        going = any(r["status"] in LIVE_STATUSES or r["status"].startswith("sweep") for r in self.all_rows)
        if not (self.is_current and going):
            return
        rows = list_runs(self.runs_dir)
        if rows != self.all_rows or going:  # "took" of a running run grows
            self.show_runs(rows)

    @property
    def run_paths(self) -> list[str]:
        return [r["path"] for r in self.rows]

    def selected_run(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not self.run_paths or table.cursor_row is None or table.cursor_row >= len(self.run_paths):
            return None
        return self.run_paths[table.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    def action_open_run(self) -> None:
        path = self.selected_run()
        if path is None:
            self.notify("no run selected", severity="warning")
            return
        self.app.open_replay([path])

    def action_mark(self) -> None:
        path = self.selected_run()
        if path is None:
            return
        if path in self.marked:
            self.marked.remove(path)
        else:
            self.marked.append(path)
        table = self.query_one("#runs", DataTable)  # in place: the table keeps its scroll position
        table.update_cell_at(Coordinate(table.cursor_row, 0), "*" if path in self.marked else "")

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("mark two or more runs with m first", severity="warning")
            return
        self.app.open_replay(self.marked)

    def action_launch(self) -> None:
        cfg = self.resolved_config()
        info = self.launch_info(cfg) if cfg is not None else None
        if cfg is not None and info is not None:
            self.app.launch(cfg, info)

    def selected_row(self) -> dict | None:
        path = self.selected_run()
        return next((r for r in self.rows if r["path"] == path), None)

    def action_stop_run(self) -> None:
        """Stop the selected run: this app's own through its worker, another process's by a stop request."""
        row = self.selected_row()
        if row is None:
            self.notify("no run selected", severity="warning")
            return
        outcome = self.app.stop_run(row["path"])
        if outcome == "stopping":
            self.notify(f"stopping {row['id']}: its measured epochs are kept", title="stop")
        elif outcome in ("requested", "already requested"):
            self.notify(f"stop {outcome}: {row['id']} (written by another process) stops after its current epoch; "
                        "its measured epochs are kept", title="stop")
        elif outcome == "not running":
            self.notify(f"{row['id']} is {row['status']}, not running", severity="warning")
        else:
            self.notify(outcome, title="cannot stop", severity="error")

    def action_resume_run(self) -> None:
        """Continue the selected stopped, failed or killed run from its last checkpoint, live."""
        row = self.selected_row()
        if row is None:
            self.notify("no run selected", severity="warning")
            return
        if row["status"] not in RESUMABLE:
            self.notify(f"{row['id']} is {row['status']}: only a stopped, failed or killed run resumes",
                        severity="warning")
            return
        self.app.resume_run(row["path"])
