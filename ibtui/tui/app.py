"""The Textual app: home, live runs in worker processes, replay and comparison.

The app only routes: state is in ``RunView``, figures in ``plots``, the engine in a spawned
process (``ibtui.engine.process``). Every binding is also a command palette entry (Ctrl+P)
and is listed by ``?``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from ibtui.config import Config
from ibtui.engine.process import Worker, context, start_worker
from ibtui.errors import UserError
from ibtui.tui.home import HomeScreen
from ibtui.tui.live import LiveRun, request_stop_of
from ibtui.tui.run_screen import CompareScreen, RunScreen
from ibtui.tui.state import RunView, SweepView, is_sweep_dir
from ibtui.tui.sweep_screen import SweepScreen
from ibtui.tui.widgets import ConfirmScreen, HelpScreen


def binding_rows(screen: Screen, app: App) -> list[tuple[str, str]]:
    """(keys, description) for every binding of ``screen`` and the app, in declaration order, keys
    as the footer shows them ("[", "→", "esc"); actions the screen turns off (stopping a replay) are left out."""
    rows: list[tuple[str, str]] = []
    seen = set()
    for node in (screen, app):
        for binding in node.BINDINGS:
            if not isinstance(binding, Binding) or not binding.description or binding.action in seen:
                continue
            if node is screen and screen.check_action(binding.action.partition("(")[0], ()) is False:
                continue
            seen.add(binding.action)
            keys = ", ".join(app.get_key_display(Binding(k.strip(), binding.action)) for k in binding.key.split(","))
            rows.append((keys, binding.description))
    return merged_digit_rows(rows)


def merged_digit_rows(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Runs of rows of consecutive digit keys that differ only in that digit ("1" "Layer 1 on/off",
    "2" "Layer 2 on/off"...) as one row: ("1–9", "Layer N on/off")."""
    def generic(key: str, description: str) -> str | None:
        return description.replace(key, "N", 1) if len(key) == 1 and key.isdigit() and key in description else None

    groups: list[list[tuple[str, str]]] = []
    for key, description in rows:
        last = groups[-1][-1] if groups else None
        if last is not None and generic(key, description) is not None \
                and generic(*last) == generic(key, description) and int(last[0]) + 1 == int(key):
            groups[-1].append((key, description))
        else:
            groups.append([(key, description)])
    return [group[0] if len(group) == 1 else (f"{group[0][0]}–{group[-1][0]}", generic(*group[0]) or "")
            for group in groups]


def screenshot_dir(runs_dir: str, environ=os.environ) -> Path:
    """Where the built-in screenshot (palette: Screenshot) writes: ``$IBTUI_SCREENSHOT_DIR``, else a
    ``screenshots`` directory next to the runs directory (servers have no ~/Downloads)."""
    chosen = environ.get("IBTUI_SCREENSHOT_DIR")
    return Path(chosen) if chosen else Path(runs_dir).absolute().parent / "screenshots"


BUILTIN_REPLACED = {"Quit"}
"""Textual's own palette commands that the app's bindings replace (its Quit does not ask first)."""


class IbtuiApp(App):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "ibtui"
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_app", "Quit"),
        Binding("h", "home", "Home", show=False),
    ]

    def __init__(self, replay: list[str] | None = None, runs_dir: str = "runs") -> None:
        super().__init__()
        self.replay_paths = replay or []
        self.runs_dir = runs_dir
        self.workers_started: list[Worker] = []
        self.live_runs: list[LiveRun] = []  # runs launched (or resumed) here: they outlive their screens

    def on_mount(self) -> None:
        self.push_screen(HomeScreen(self.runs_dir))
        if self.replay_paths:
            self.open_replay(self.replay_paths)

    # ------------------------------------------------------------------ routing
    def open_replay(self, paths: list[str]) -> None:
        live = self.live_run(paths[0]) if len(paths) == 1 else None
        if live is not None and live.running:  # launched here and still going: its live screen again
            self.push_screen(RunScreen(live.view, live=live))
            return
        if len(paths) == 1 and is_sweep_dir(paths[0]):
            try:
                self.push_screen(SweepScreen(SweepView.from_dir(paths[0])))
            except UserError as exc:
                self.notify(str(exc), title="cannot open sweep", severity="error")
            return
        try:
            views = [RunView.from_run_dir(p) for p in paths]
        except UserError as exc:
            self.notify(str(exc), title="cannot replay", severity="error")
            return
        self.push_screen(RunScreen(views[0]) if len(views) == 1 else CompareScreen(views))

    def launch(self, cfg: Config, info: dict[str, Any] | None = None) -> None:
        """Start the engine on ``cfg`` in a spawned process (``info``: name, tags, note, overrides for
        its meta.json) and show its live screen."""
        worker = start_worker(cfg.to_dict(), info=info)
        view = RunView(title=cfg.preset, status="starting", epochs_total=cfg.train.epochs, schedule=cfg.schedule)
        self.go_live(LiveRun(worker, view))

    def go_live(self, live: LiveRun) -> None:
        """Hold ``live`` (its worker and view) at the app's level, drain it, show its screen."""
        self.workers_started.append(live.worker)
        self.live_runs.append(live)
        live.start(self)
        self.push_screen(RunScreen(live.view, live=live))

    def live_run(self, path: str) -> LiveRun | None:
        """The run launched here that writes ``path`` (the latest one), if any."""
        return next((live for live in reversed(self.live_runs) if live.shows(path)), None)

    def stop_run(self, path: str) -> str:
        """Stop the run at ``path``: through its worker when this app runs it ("stopping"), else by a
        stop request in its directory when another process writes it ("requested", or "already
        requested"); "not running" otherwise, or the one-line reason it cannot be asked."""
        live = self.live_run(path)
        if live is None or not live.running:
            return request_stop_of(path)
        live.worker.stop()
        live.view.add_log("stop requested from the run list: finishing the current epoch")
        return "stopping"

    def resume_run(self, path: str) -> None:
        """Continue a stopped, failed or killed run in a worker process, shown live (its measured
        epochs first, from disk)."""
        try:
            view = RunView.from_run_dir(path)
        except UserError as exc:
            self.notify(str(exc), title="cannot resume", severity="error")
            return
        view.trim_to_last_measure()  # the engine recomputes what follows its last checkpoint
        view.status = "starting"
        view._run = None
        self.go_live(LiveRun(start_worker(None, resume_dir=str(path)), view))

    def running_workers(self) -> list[Worker]:
        return [w for w in self.workers_started if w.running]

    # ------------------------------------------------------------------ actions
    def action_home(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(binding_rows(self.screen, self)))

    def action_quit_app(self) -> None:
        if not self.running_workers():
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(ConfirmScreen("A run is still going. Stop it and quit? Its measured epochs are kept."), answer)

    def on_unmount(self) -> None:
        for worker in self.workers_started:
            worker.shutdown()

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        if path is None:
            folder = screenshot_dir(self.runs_dir)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self.notify(f"cannot write a screenshot in {folder}: {exc.strerror or exc}", severity="error")
                return None
            path = str(folder)
        return super().deliver_screenshot(filename, path, time_format)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from (c for c in super().get_system_commands(screen) if c.title not in BUILTIN_REPLACED)
        for node in (screen, self):
            for binding in node.BINDINGS:
                if isinstance(binding, Binding) and binding.description:
                    key = self.get_key_display(Binding(binding.key.split(",")[0], binding.action))
                    yield SystemCommand(binding.description, f"key: {key}", partial(node.run_action, binding.action))


def run_tui(replay: list[str] | None = None, runs_dir: str = "runs") -> None:
    """Start the app (the spawn machinery first, so workers can start under Textual)."""
    context()
    for path in replay or []:
        if not Path(path).exists():
            raise UserError(f"{path} does not exist")
        if is_sweep_dir(path):
            if len(replay or []) > 1:
                raise UserError(f"{path} is a sweep: replay it alone")
            SweepView.from_dir(path)
        else:
            RunView.from_run_dir(path)  # a foreign or corrupt directory fails here, before the UI starts
    IbtuiApp(replay=replay, runs_dir=runs_dir).run()
