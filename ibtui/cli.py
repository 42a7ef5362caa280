"""Command line: ``ibtui run``, ``ibtui presets``. The headless front door of the engine.

Every user error prints ``error: <one line>`` to stderr and exits with code 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from ibtui.errors import UserError
from ibtui.runinfo import run_label

app = typer.Typer(
    name="ibtui",
    help="Information-plane research in the terminal: train small networks and watch I(X;T), I(T;Y) in bits.",
    add_completion=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)
presets_app = typer.Typer(help="List the presets, or show one fully resolved.", invoke_without_command=True)
app.add_typer(presets_app, name="presets")

out = Console()
err = Console(stderr=True)

EXIT_STOPPED = 130


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def termination_as_interrupt() -> contextlib.AbstractContextManager[None]:
    """SIGINT, SIGTERM and SIGHUP stop a run like Ctrl+C does (status `stopped`, epochs kept), never
    in the middle of a write, and a second signal never interrupts the stop (``ibtui.engine.signals``)."""
    from ibtui.engine.signals import stop_on_signals

    return stop_on_signals()


def load_engine(module: str) -> Any:
    """Import an engine ``module`` (it imports torch, seconds on a loaded machine) with stop signals
    held until the import is complete, then take a stop that came meanwhile (KeyboardInterrupt:
    exit 130). torch's import is not safe to interrupt: it swallows a KeyboardInterrupt, or fails
    later with an ImportError, or makes the process die by SIGINT at exit."""
    import importlib

    from ibtui.engine.signals import deferred, stop_on_signals

    with stop_on_signals(), deferred():
        return importlib.import_module(module)


# ----------------------------------------------------------------------------- TUI


@app.callback()
def tui(
    ctx: typer.Context,
    runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="Where run directories are listed and written "
                                           "(default: runs/; also the default of `run` and `sweep`)."),
) -> None:
    """With no command: the interactive app (pick a preset, launch, watch live, replay)."""
    ctx.obj = {"runs_dir": runs_dir}
    if ctx.invoked_subcommand is not None:
        return
    from ibtui.tui.app import run_tui

    try:
        run_tui(runs_dir=runs_dir or "runs")
    except UserError as exc:
        fail(str(exc))


@app.command()
def replay(
    run_dirs: List[str] = typer.Argument(..., help="One run directory, or several to compare on one plane."),
) -> None:
    """Review saved runs in the app (a run still being written is followed); several runs are overlaid."""
    from ibtui.figures import RUN_COLOURS
    from ibtui.tui.app import run_tui

    if len(run_dirs) > len(RUN_COLOURS):
        fail(f"replay compares at most {len(RUN_COLOURS)} runs (one colour each); got {len(run_dirs)}")
    try:
        run_tui(replay=run_dirs)
    except UserError as exc:
        fail(str(exc))


@app.command("export")
def export_cmd(
    run_dirs: List[str] = typer.Argument(..., help="One or more run directories (several: overlaid on shared axes)."),
    plane: Optional[str] = typer.Option(None, "--plane", "-p", help="The plane (default: each run's first)."),
    kind: str = typer.Option("plane", "--kind", "-k", help="plane | multiples | curves | snr."),
    by: str = typer.Option("plane", "--by", help="For --kind multiples: one panel per plane, layer or run."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="png | pdf | svg | csv (default: --out's suffix, else png)."),
    out_file: Optional[str] = typer.Option(None, "--out", "-o", help="The file to write (default: <first run>/export/<name>.<format>)."),
) -> None:
    """Write a publication figure (matplotlib) or a plane's coordinates (CSV) of saved runs.

    The information plane: one path per layer, points coloured by epoch on a log scale with a
    colour bar, H(X) and H(Y) marked, the other KDE bound dashed, ensembles' ±1 sd bars.
    """
    from ibtui.export import export, run_export_dir
    from ibtui.rundir.reader import load_run

    try:
        runs = [load_run(path) for path in run_dirs]
        target = Path(out_file) if out_file else None
        fmt = (fmt or (target.suffix.lstrip(".") if target is not None and target.suffix else "png")).lower()
        directory = target.parent if target is not None else run_export_dir(runs[0])
        result = export(runs, directory, kind=kind, plane=plane, formats=[fmt], by=by,
                        stem=target.stem if target is not None else None)
    except UserError as exc:
        fail(str(exc))
    if not result.paths:
        fail(f"nothing written: {'; '.join(result.skipped)}")
    for path in result.paths:
        out.print(escape(str(path)), highlight=False, soft_wrap=True)
    for note in result.skipped:
        err.print(f"skipped: {escape(note)}", highlight=False)


@app.command()
def analyze(
    run_dir: str = typer.Argument(..., help="A run directory with checkpoints."),
    estimator: str = typer.Option(..., "--estimator", "-e", help="Estimator kind (see `ibtui estimators`)."),
    bins: Optional[str] = typer.Option(None, "--bins", help="Comma-separated bin counts to try (= --vary bins=...)."),
    vary: Optional[str] = typer.Option(None, "--vary", help="PARAM=v1,v2,... : the estimator parameter to sweep."),
    fixed: List[str] = typer.Option([], "--set", "-s", help="PARAM=VALUE held fixed for every value (repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda (default: the run's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored description as JSON."),
) -> None:
    """Recompute a run's information planes from its saved weights, once per parameter value.

    Stores analysis/<estimator>-<param>.npz in the run; the app shows each value as a plane and
    the whole family with `f`. `--estimator binning --bins ...` uses binning_fixed (equal bins
    between its low and high, [-1, 1] unless set). Without --bins or --vary the estimator runs once,
    at its --set values (analysis/<estimator>.npz). The measurement is the run's own: at the run's
    settings it gives the run's planes back.
    """
    from ibtui.config import parse_value
    run_analysis = load_engine("ibtui.engine.analyze").analyze

    if bins is not None and vary is not None:
        fail("give at most one of --bins N,N,... or --vary PARAM=v1,v2,...")
    note = ""
    if bins is None and vary is None:  # once, at the --set values (or the estimator's defaults)
        param, text = "", ""
    elif bins is not None:
        param, text = "bins", bins
        if estimator == "binning":  # binning is by bin size; a bin count means fixed-width bins
            estimator = "binning_fixed"
            note = "note: --bins with binning uses binning_fixed (that many edges between low and high)"
    else:
        param, sep, text = vary.partition("=")
        param = param.strip()
        if not sep or not param:
            fail(f"--vary '{vary}' is not of the form PARAM=v1,v2,...")
    values = [parse_value(v.strip()) for v in text.split(",") if v.strip()]
    if param and not values:
        fail(f"give at least one value to vary {param} over")
    settings: dict[str, Any] = {}
    for item in fixed:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set '{item}' is not of the form PARAM=VALUE")
        settings[key.strip()] = parse_value(value.strip())
    progress = Progress(TextColumn("[bold]analyze"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                        TimeRemainingColumn(), console=err, transient=True)
    task = progress.add_task("analyze", total=None)
    try:
        with termination_as_interrupt(), progress:
            description = run_analysis(run_dir, estimator, (param, values) if param else None, settings, device,
                                       on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    except UserError as exc:
        fail(str(exc))
    if note:
        err.print(note, highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(description, indent=2) + "\n")
        return
    import numpy as np

    from ibtui.rundir.reader import read_arrays

    arrays = read_arrays(Path(run_dir), description["arrays"])
    layers = description["layers"]
    what = f"{param} = {', '.join(map(str, values))}" if param else (", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults")
    table = Table(title=f"{estimator}: {what} · {len(description['epochs'])} "
                        f"epochs · {description['seconds']:.1f} s · I(X;T) final/peak, bits",
                  caption=escape(f"{run_dir}/{description['arrays']}"), header_style="bold", box=box.SIMPLE_HEAD)
    single = bool(param) and len(description["planes"]) == len(values)  # one plane per value: rows by the value
    table.add_column(param if single else "plane", no_wrap=True)
    for name in layers:
        table.add_column(escape(name), justify="right", no_wrap=True)
    for index, plane in enumerate(description["planes"]):
        ixt = np.asarray(arrays[f"{plane}.ixt"])
        label = str(values[index]) if single else plane.replace(f"[{param}=", " ").rstrip("]")
        table.add_row(escape(label), *(f"{ixt[-1, i]:.1f}/{ixt[:, i].max():.1f}" for i in range(len(layers))))
    out.print(table)


# ----------------------------------------------------------------------------- presets


@presets_app.callback()
def presets_list(ctx: typer.Context) -> None:
    """List the presets with their one-line descriptions."""
    if ctx.invoked_subcommand is not None:
        return
    from ibtui.config import available_presets, preset_description

    table = Table(box=None, show_header=True, header_style="bold")
    table.add_column("preset")
    table.add_column("description")
    table.add_column("file", style="dim")
    for name, path in available_presets().items():
        table.add_row(escape(name), escape(preset_description(path)), escape(str(path)))
    out.print(table)


@presets_app.command("show")
def presets_show(
    name: str = typer.Argument(..., help="Preset name or path to a .toml file."),
    overrides: List[str] = typer.Option([], "--set", "-s", help="Override a field: section.key=value (repeatable)."),
) -> None:
    """Print a preset fully resolved (defaults and overrides applied) as TOML."""
    from ibtui.config import load_preset

    try:
        cfg = load_preset(name, overrides)
    except UserError as exc:
        fail(str(exc))
    sys.stdout.write(cfg.to_toml())


# ----------------------------------------------------------------------------- estimators


@app.command("estimators")
def estimators_list() -> None:
    """List the MI estimators: preset name, planes they produce, parameters with defaults, summary."""
    import dataclasses

    from ibtui.estimators import ESTIMATORS

    for name, cls in ESTIMATORS.items():
        est = cls()
        params = ", ".join(f"{f.name}={getattr(est, f.name)!r}" for f in dataclasses.fields(est)) or "(none)"
        out.print(f"[bold cyan]{escape(name)}[/]  [dim]planes:[/] {escape(', '.join(est.planes))}", highlight=False)
        out.print(f"  {escape(cls.summary)}", highlight=False)
        out.print(f"  [dim]parameters:[/] {escape(params)}", highlight=False, soft_wrap=True)
    out.print(escape("Use one in a preset as [estimators.NAME] or with --set estimators.NAME.PARAM=VALUE; "
                     "all values in bits."), style="dim")


# ----------------------------------------------------------------------------- run


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} ep/s" if speed else "… ep/s", style="cyan")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def summary_table(summary: dict[str, Any]) -> Table:
    """Per plane and layer, in bits: final I(X;T) and I(T;Y), peak I(X;T) and its epoch, the drop
    from the peak. For an ensemble each is the mean over members of each member's own value, ± the
    members' standard deviation (``ibtui.engine.summary``). ▲ marks a value at its cap."""
    seeds = summary.get("seeds") or []
    ensemble = len(seeds) > 1
    title = (f"{summary['status']} · {summary['epochs_done']}/{summary['epochs_total']} epochs · "
             f"{summary['measured_epochs']} measured · {summary['wall_seconds']:.1f} s · "
             f"train acc {_fmt(summary['train_acc'])} · test acc {_fmt(summary['test_acc'])}"
             + (f" (float {_fmt(summary['float_test_acc'])})" if "float_test_acc" in summary else "")
             + (f" · {len(seeds)} networks: mean ± sd of each one's own value" if ensemble else ""))
    capped = any(row.get("caps") for rows in summary["planes"].values() for row in rows)
    caption = escape(summary["run_dir"]) + ("\n▲ at its cap (saturated, not resolved): " + "; ".join(sorted(
        {cap for rows in summary["planes"].values() for row in rows for cap in row.get("caps", [])})) if capped else "")
    table = Table(title=title, caption=caption, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    for col in ["plane", "layer", "I(X;T)\nbits", "I(T;Y)\nbits", "peak I(X;T)\nbits", "at\nepoch", "drop\nbits"]:
        table.add_column(col, justify="left" if col in ("plane", "layer") else "right", no_wrap=True)

    def value(row: dict[str, Any], key: str, digits: int = 2) -> str:
        text = _fmt(row.get(key), digits)
        if row.get(f"{key}_sd") is not None:
            text += f"±{_fmt(row[f'{key}_sd'], digits)}"
        return text

    for plane, rows in summary["planes"].items():
        for i, row in enumerate(rows):
            caps = row.get("caps") or []
            mark_x = "▲" if any(c.startswith(("I(X;T)", "H(T|X)")) for c in caps) else ""
            mark_y = "▲" if any(c.startswith("I(T;Y)") for c in caps) else ""
            table.add_row(escape(plane) if i == 0 else "", escape(str(row["layer"])), value(row, "final_ixt") + mark_x,
                          value(row, "final_ity") + mark_y, value(row, "peak_ixt"), value(row, "peak_epoch", 0),
                          value(row, "compression"))
        table.add_section()
    return table


def given_runs_dir(ctx: typer.Context, runs_dir: str | None) -> str | None:
    """A command's own --runs-dir, else the one given before the command (`ibtui --runs-dir D run`)."""
    return runs_dir if runs_dir is not None else (ctx.obj or {}).get("runs_dir")


@app.command()
def run(
    ctx: typer.Context,
    preset: str = typer.Option("quick", "--preset", "-p", help="Preset name (see `ibtui presets`) or a .toml file."),
    overrides: List[str] = typer.Option([], "--set", "-s", help="Override a field: section.key=value (repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (= --set train.device=...)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (= --set train.seed=...)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Train this many networks together, seeds "
                                        "seed, seed+1, ... (= --set train.seeds=...)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (= --set train.epochs=...)."),
    runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="Where run directories go (default: runs/)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Directory with dataset files (MNIST IDX...)."),
    name: Optional[str] = typer.Option(None, "--name", help="A name for the run (shown in the run list)."),
    tags: List[str] = typer.Option([], "--tag", help="A tag (repeatable; letters, digits, _.:+=-)."),
    note: Optional[str] = typer.Option(None, "--note", help="A one-line note kept with the run."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON summary instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    progress_every: float = typer.Option(10.0, "--progress-every", help="When stderr is not a terminal (a log): "
                                         "a plain progress line every this many seconds."),
) -> None:
    """Train and measure the information plane headless, with a progress bar; writes runs/<id>/.

    meta.json records the settings that differ from the preset's and --name, --tag, --note; the
    run list and the app show them ("quick · relu · 300 epochs").
    """
    from ibtui.config import load_preset
    runner = load_engine("ibtui.engine.runner")
    execute, prepare = runner.execute, runner.prepare

    runs_dir = given_runs_dir(ctx, runs_dir)
    extra = [f"train.device={device}" if device is not None else None,
             f"train.seed={seed}" if seed is not None else None,
             f"train.seeds={seeds}" if seeds is not None else None,
             f"train.epochs={epochs}" if epochs is not None else None,
             f"store.runs_dir={json.dumps(runs_dir)}" if runs_dir is not None else None,
             f"data.data_dir={json.dumps(data_dir)}" if data_dir is not None else None]
    if not (progress_every >= 0 and math.isfinite(progress_every)):
        fail(f"--progress-every must be a number of seconds >= 0; got {progress_every}")
    with termination_as_interrupt():  # a stop signal from here on: exit 130, no run left `running`
        try:
            cfg = load_preset(preset, [*overrides, *(e for e in extra if e)])
            info = recorded_info(preset, cfg, overrides, name, tags, note)
            prepared = prepare(cfg)  # device and dataset problems surface before any progress bar
        except UserError as exc:
            fail(str(exc))
        _with_progress(run_label(cfg.preset, info["overrides"]), cfg.train.epochs,
                       lambda on_event: execute(cfg, on_event=on_event, prepared=prepared, info=info), quiet, as_json,
                       schedule=cfg.schedule, every_s=progress_every)


def recorded_info(preset: str, cfg: Any, overrides: List[str], name: str | None, tags: List[str],
                  note: str | None) -> dict[str, Any]:
    """meta.json's name, tags, note and overrides of the preset (``ibtui.runinfo``); the config's
    description led by the run's label when settings were overridden. UserError for a bad name, tag, note."""
    from ibtui.config import load_preset
    from ibtui.runinfo import described, flatten, run_info

    try:
        base = load_preset(preset).to_dict()
    except UserError:  # a preset that loads only with the overrides: they are what differs
        resolved = flatten(cfg.to_dict())
        keys = [item.partition("=")[0].strip() for item in overrides]
        base = {}
        info = run_info({}, {}, name, tags, note)
        info["overrides"] = {k: resolved[k] for k in keys if k in resolved}
    else:
        info = run_info(base, cfg.to_dict(), name, tags, note)
    cfg.description = described(cfg.description, cfg.preset, info["overrides"])
    return info


@app.command()
def resume(
    run_dir: str = typer.Argument(..., help="A stopped, failed or killed run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON summary instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    progress_every: float = typer.Option(10.0, "--progress-every", help="When stderr is not a terminal (a log): "
                                         "a plain progress line every this many seconds."),
) -> None:
    """Continue a run from its last checkpoint, in place (same later epochs as an uninterrupted run)."""
    from ibtui.config import config_from_dict, read_toml
    resume_run = load_engine("ibtui.engine.runner").resume
    from ibtui.rundir.reader import read_run_meta
    from ibtui.runinfo import clean_info

    if not (progress_every >= 0 and math.isfinite(progress_every)):
        fail(f"--progress-every must be a number of seconds >= 0; got {progress_every}")
    with termination_as_interrupt():
        try:
            cfg = config_from_dict(read_toml(Path(run_dir) / "config.toml"), source=run_dir)
            title = run_label(cfg.preset, clean_info(read_run_meta(run_dir))["overrides"])
        except UserError as exc:
            fail(str(exc))
        _with_progress(title, cfg.train.epochs, lambda on_event: resume_run(run_dir, on_event=on_event), quiet,
                       as_json, schedule=cfg.schedule, every_s=progress_every)


@app.command()
def stop(
    run_dir: str = typer.Argument(..., help="A running run directory (written by another process)."),
    wait: float = typer.Option(60.0, "--wait", help="Seconds to wait for the run to stop (0: do not wait)."),
) -> None:
    """Stop a running run cleanly after its current epoch (its measured epochs are kept; `ibtui resume`
    continues it). Works on a run started anywhere on this machine: it leaves a stop request in the
    run directory, which the writing process reads once per epoch; no pid is signalled."""
    from ibtui.rundir.reader import read_run_meta, writer_alive
    from ibtui.rundir.store import request_stop

    if not (wait >= 0 and math.isfinite(wait)):
        fail(f"--wait must be a number of seconds >= 0; got {wait}")
    path = Path(run_dir)
    try:
        meta = read_run_meta(path)
    except UserError as exc:
        fail(str(exc))
    if not writer_alive(path, meta):
        fail(f"{run_dir} is not running (status {meta.get('status', '?')}): nothing to stop")
    try:
        fresh = request_stop(path)
    except OSError as exc:
        fail(f"cannot ask {run_dir} to stop: {exc.strerror or exc}")
    print(f"stop {'requested' if fresh else 'already requested'}: {run_dir} stops after its current epoch")
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        if not writer_alive(path, meta):
            try:
                print(f"{run_dir}: {read_run_meta(path).get('status', '?')}")
            except UserError as exc:
                fail(str(exc))
            return
        time.sleep(0.2)
    if wait:
        fail(f"{run_dir} still running after {wait:g} s (the stop request stays; it stops after its current epoch)", 1)


class EtaColumn(ProgressColumn):
    """The ETA by schedule (``ibtui.progress.Eta``), from the task's ``eta`` field."""

    def render(self, task: Task) -> Text:
        from ibtui.progress import fmt_eta

        return Text(f"ETA {fmt_eta(task.fields.get('eta'))}", style="cyan")


class MiColumn(ProgressColumn):
    """The MI values of the last measurement: one line, cut with … to the width the other columns leave."""

    def render(self, task: Task) -> Text:
        text = Text.from_markup(task.fields.get("mi", ""), overflow="ellipsis")
        text.no_wrap = True
        return text


def progress_bar(console: Console, disable: bool = False) -> Progress:
    """The progress bar of a run on a terminal; at 80 columns: the label shortened, then the ETA
    before the MI values, which take what is left."""
    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(max_width=24, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=10),
        TextColumn("epoch {task.completed:.0f}/{task.total:.0f}", table_column=Column(no_wrap=True)),
        RateColumn(table_column=Column(no_wrap=True)), EtaColumn(table_column=Column(no_wrap=True)),
        MiColumn(table_column=Column(ratio=1)),  # wrappable for Rich: it gives way first
        console=console, disable=disable, transient=False, refresh_per_second=4,
    )


def _with_progress(title: str, epochs: int, start: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]],
                   quiet: bool, as_json: bool, schedule: Any = None, every_s: float = 10.0) -> None:
    """Drive ``start(on_event)`` under a progress bar (on a terminal) or plain progress lines every
    ``every_s`` seconds (stderr not a terminal: a log), then print the summary (table or JSON)."""
    from ibtui.progress import Eta, PlainProgress, measure_text

    eta = Eta(epochs, schedule)
    plain = None
    if not quiet and not err.is_terminal:
        plain = PlainProgress(lambda line: err.out(line, highlight=False), title, epochs, eta,
                              every_s=every_s)
    progress = progress_bar(err, disable=quiet or plain is not None)
    task = progress.add_task(escape(title), total=max(epochs, 1), mi="", eta=None)
    layer_names: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        kind = event["type"]
        eta.apply(event)
        if kind == "start":
            progress.start()  # from the run's start on: a run refused before it (bad input) shows no bar
            layer_names[:] = event["meta"]["layers"]
            if not quiet:
                meta = event["meta"]
                extra = "".join(f"  [dim]{key}:[/] {escape(str(meta[key]))}" for key in ("name", "note")
                                if meta.get(key))
                if meta.get("tags"):
                    extra += f"  [dim]tags:[/] {escape(', '.join(meta['tags']))}"
                for line in (f"[dim]run:[/] {escape(title)}", f"[dim]directory:[/] {escape(event['run_dir'])}",
                             f"[dim]device:[/] {escape(str(meta['device']))}{extra}"):  # each folded to the width
                    err.print(line, highlight=False, overflow="fold")
        elif kind == "epoch":
            progress.update(task, completed=event["epoch"], eta=eta.seconds())
        elif kind == "measure":
            progress.update(task, completed=max(progress.tasks[0].completed, event["epoch"]), eta=eta.seconds(),
                            mi=escape(measure_text(event, layer_names, compact=True)))
        if plain is not None:
            plain.on_event(event)

    try:
        with termination_as_interrupt():
            try:
                summary = start(on_event)
            finally:
                progress.stop()
    except UserError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        out.print(summary_table(summary))
        phases = summary.get("gradient_phases")
        if phases:
            marks = ", ".join(f"{layer} {'epoch ' + str(e) if e is not None else 'none'}"
                              for layer, e in zip(summary["layers"], phases["transition_epoch"]))
            out.print(f"drift→diffusion (gradient SNR < 1 from then on for {phases['window']} epochs, or to the "
                      f"run's end): {marks}", highlight=False)
    if summary["status"] == "failed":
        fail(f"run failed: {summary['error']} (see {summary['run_dir']}/worker.log)", code=1)
    if summary["status"] == "stopped":
        err.print(f"stopped; {summary['measured_epochs']} measured epochs kept in {escape(summary['run_dir'])}")
        raise typer.Exit(EXIT_STOPPED)


# ----------------------------------------------------------------------------- sweep


@app.command()
def sweep(
    ctx: typer.Context,
    preset: str = typer.Option("quick", "--preset", "-p", help="Preset name or .toml file every cell starts from."),
    grid: List[str] = typer.Option([], "--grid", "-g", help="KEY=v1,v2,... : one axis of the grid (repeatable)."),
    overrides: List[str] = typer.Option([], "--set", "-s", help="KEY=VALUE held fixed in every cell (repeatable)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Networks trained together in each cell (= train.seeds)."),
    backend: str = typer.Option("local", "--backend", help="local (worker processes here) | ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="auto | HOST:PORT | local (implies --backend ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Local backend: cells at once (default: one per core)."),
    retries: int = typer.Option(1, "--retries", help="Retries of a failed cell (resumed from its checkpoint)."),
    cpus_per_cell: float = typer.Option(1.0, "--cpus-per-cell", help="Ray: num_cpus of each task (torch threads)."),
    gpus_per_cell: float = typer.Option(0.0, "--gpus-per-cell", help="Ray: num_gpus of each task (e.g. 0.25)."),
    runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="Where the sweep directory goes (default: runs/)."),
    name: Optional[str] = typer.Option(None, "--name", help="Sweep directory name (default: from the command)."),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run a grid of overrides x a preset, every cell an ordinary run under runs/<sweep-id>/.

    Writes summary.csv and summary.json (accuracy, peak and final I(X;T), compression per
    cell, plane and layer). The same command again skips the cells already done.
    """
    prepare = load_engine("ibtui.engine.runner").prepare
    from ibtui.engine.sweep import Sweep, SweepSpec, parse_grid, ray_session

    if ray_address is not None:
        backend = "ray"
    if backend not in ("local", "ray"):
        fail(f"--backend must be local or ray; got '{backend}'")
    if retries < 0:
        fail(f"--retries must be >= 0; got {retries}")
    if workers is not None and workers < 1:
        fail(f"--workers must be >= 1; got {workers}")
    if cpus_per_cell <= 0 or gpus_per_cell < 0:
        fail("--cpus-per-cell must be > 0 and --gpus-per-cell >= 0")
    if name is not None and (not name.strip() or "/" in name or name in (".", "..")):
        fail(f"--name '{name}' must be a plain directory name")
    connection = contextlib.ExitStack()
    try:
        spec = SweepSpec(preset, [parse_grid(g) for g in grid], list(overrides), seeds)
        first, *_ = [spec.config(cell) for cell in spec.cells()]  # every cell valid before any runs
        # dataset and device problems surface now (a Ray driver need not have the cluster's GPUs)
        prepare(spec.config(spec.cells()[0], 0, *(['train.device="cpu"'] if backend == "ray" else [])))
        job = Sweep(spec, given_runs_dir(ctx, runs_dir) or first.store.runs_dir, name)
        fresh = not job.root.exists()
        if backend == "ray":  # connected before any directory is made: an unreachable Ray leaves none
            connection.enter_context(ray_session(ray_address))
        job.open()
    except UserError as exc:
        connection.close()
        fail(str(exc))
    with connection:
        _run_sweep(job, todo_and_done=job.pending(), backend=backend, ray_address=ray_address, workers=workers,
                   retries=retries, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell, fresh=fresh,
                   quiet=quiet, as_json=as_json)


def _run_sweep(job: Any, todo_and_done: tuple[list[Any], list[Any]], backend: str, ray_address: str | None,
               workers: int | None, retries: int, cpus_per_cell: float, gpus_per_cell: float, fresh: bool,
               quiet: bool, as_json: bool) -> None:
    """Run a sweep's pending cells on its backend, print the outcomes and the summary; the exit code
    says whether every cell is done (0), some failed (1) or the sweep was stopped (130)."""
    from ibtui.engine.sweep import Outcome, cell_result, default_workers, run_local, run_ray

    done, todo = todo_and_done
    say = (lambda text: None) if quiet or as_json else (lambda text: err.print(text, highlight=False))
    say(f"[dim]sweep directory:[/] {escape(str(job.root))}  [dim]cells:[/] {len(job.cells)} "
        f"({len(done)} already done)  [dim]backend:[/] {backend}")
    earlier = job.recorded_attempts()
    for cell in done:  # done by an earlier command: its tries as recorded then (0 when unknown)
        job.outcomes[cell.name] = Outcome(cell, "done", earlier.get(cell.name, 0), None, cell_result(job.cell_dir(cell)))
    if done:
        job.write_summaries()
    progress = Progress(TextColumn("[bold]sweep"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} cells"),
                        TimeRemainingColumn(), console=err, disable=quiet or as_json, transient=True)
    task = progress.add_task("sweep", total=len(job.cells), completed=len(done))

    def on_outcome(outcome: Outcome) -> None:
        job.record(outcome)
        progress.update(task, advance=1)
        mark = {"done": "[green]done[/]", "failed": "[red]failed[/]"}.get(outcome.status, f"[yellow]{outcome.status}[/]")
        tries = f" after {outcome.attempts} attempts" if outcome.attempts and outcome.attempts > 1 else ""
        extra = f" · test acc {_fmt(outcome.result.get('test_acc'))} · {_fmt(outcome.result.get('wall_seconds'), 1)} s" \
            if outcome.status == "done" else f"{tries}: {escape(str(outcome.error or ''))}"
        if not (quiet or as_json):
            progress.console.print(f"{escape(outcome.cell.name)} {mark}{extra}", highlight=False)

    try:
        with termination_as_interrupt(), progress:
            if backend == "local":
                finished = run_local(job, todo, workers or default_workers(len(todo)), retries, on_outcome)
            else:
                finished = run_ray(job, todo, ray_address, retries, cpus_per_cell, gpus_per_cell, on_outcome)
    except UserError as exc:
        if fresh:  # the backend could not start (Ray missing or unreachable): leave no sweep behind
            job.remove_if_unstarted()
        fail(str(exc))
    summary = job.summary()
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        out.print(sweep_table(summary))
        out.print(f"[dim]summary:[/] {escape(str(job.root / 'summary.csv'))}, summary.json", highlight=False)
    if not finished or summary["counts"]["stopped"]:
        err.print(f"stopped; the same command resumes the sweep in {escape(str(job.root))}")
        raise typer.Exit(EXIT_STOPPED)
    failed = summary["counts"]["failed"]
    if failed:
        fail(f"{failed} of {len(job.cells)} cells failed (see summary.csv and each cell's worker.log)", code=1)


def sweep_table(summary: dict[str, Any]) -> Table:
    """Per cell: its grid values, status, attempts, test accuracy, wall time, and the peak and final
    I(X;T) and the compression (bits) of the first plane's last hidden layer."""
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    first = next((c for c in summary["cells"] if c.get("planes")), {})
    plane, rows = next(iter((first.get("planes") or {}).items()), ("?", []))
    layer = rows[-2]["layer"] if len(rows) >= 2 else "last layer"
    table = Table(title=escape(f"sweep {summary['id']} · {counts}"), caption=escape(f"I(X;T) in bits: {plane}, {layer}"),
                  header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    keys = [k for k, _ in summary["grid"]]
    for col in ["#", *(k.split(".")[-1] for k in keys), "status", "tries", "acc", "s", "peak", "final", "drop"]:
        table.add_column(escape(col), justify="right" if col in ("tries", "acc", "s", "peak", "final", "drop")
                         else "left", no_wrap=True)
    for cell in summary["cells"]:
        table_rows = (cell.get("planes") or {}).get(plane, [])
        row = table_rows[-2] if len(table_rows) >= 2 else (table_rows[-1] if table_rows else {})
        table.add_row(cell["name"].split("-", 1)[0], *(escape(str(cell["overrides"].get(k, ""))) for k in keys),
                      cell["status"], _fmt(cell.get("attempts")), _fmt(cell.get("test_acc")),
                      _fmt(cell.get("wall_seconds"), 1), _fmt(row.get("peak_ixt"), 2), _fmt(row.get("final_ixt"), 2),
                      _fmt(row.get("compression"), 2))
    return table


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl+C outside a run (a run records it as `stopped`)
        err.print("interrupted")
        sys.exit(EXIT_STOPPED)
