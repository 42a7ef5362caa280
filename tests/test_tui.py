"""The TUI driven by Textual's Pilot with finite fake event streams, and replays of run directories."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
from pathlib import Path

import pytest
from textual.app import App

from conftest import tiny_config
from ibtui.engine.runner import execute
from ibtui.errors import UserError
from ibtui.tui.app import IbtuiApp, binding_rows
from ibtui.tui.run_screen import CompareScreen, RunScreen
from ibtui.tui.state import RunView, list_runs
from ibtui.tui.widgets import ConfirmScreen, HelpScreen

META = {"id": "fake-run", "preset": "fake", "layers": ["h1:3", "h2:2", "softmax:2"], "planes": ["binning", "kde_upper"],
        "h_x": 12.0, "h_y": 1.0, "epochs_total": 10, "device": "cpu"}


def measure(epoch: int) -> dict:
    f = epoch / 10
    return {"type": "measure", "epoch": epoch, "train_loss": 0.7 - 0.05 * epoch, "train_acc": 0.5 + f / 2,
            "test_loss": 0.7, "test_acc": 0.5 + f / 3,
            "planes": {"binning": {"ixt": [12.0, 8 + f, 3 + f], "ity": [1.0, 0.5 + f / 3, 0.1 + f / 2]},
                       "kde_upper": {"ixt": [11.0, 7 + f, 2 + f], "ity": [0.9, 0.4 + f / 3, 0.1 + f / 3]}},
            "schedule": {"decision": "fixed", "skip": 2}}


def fake_stream(epochs: int = 10, end: bool = True) -> list[dict]:
    events = [{"type": "start", "run_dir": "/nonexistent/fake-run", "meta": META}, measure(0)]
    for e in range(1, epochs + 1):
        events.append({"type": "epoch", "epoch": e, "epochs": epochs, "train_loss": 0.5, "train_acc": 0.8,
                       "test_loss": 0.6, "test_acc": 0.7})
        if e % 2 == 0:
            events.append(measure(e))
    if end:
        events += [{"type": "end", "status": "done", "error": None, "summary": {"epochs_done": epochs}}, {"type": "exit"}]
    return events


class FakeProcess:
    exitcode = -9


class FakeWorker:
    """Looks like ibtui.engine.process.Worker; serves a finite list of events, then 'dies'."""

    def __init__(self, events: list[dict], stays_alive: bool = False) -> None:
        self.events = queue.Queue()
        for e in events:
            self.events.put(e)
        self.stays_alive = stays_alive
        self.paused = False
        self.stopped = False
        self.process = FakeProcess()

    @property
    def alive(self) -> bool:
        return self.stays_alive and not self.stopped

    running = alive

    def get(self, timeout: float):
        try:
            return self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return None

    def pause(self, paused: bool) -> None:
        self.paused = paused

    def stop(self) -> None:
        self.stopped = True

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stopped = True


class OneScreenApp(App):
    """Hosts a single screen, as the real app would after navigation."""

    CSS_PATH = IbtuiApp.CSS_PATH

    def __init__(self, screen) -> None:
        super().__init__()
        self._screen = screen

    def on_mount(self) -> None:
        self.push_screen(self._screen)

    def action_home(self) -> None:
        self.exit()


async def settle(pilot, screen: RunScreen, predicate, tries: int = 100) -> None:
    for _ in range(tries):
        await pilot.pause(0.02)
        if predicate():
            return
    raise AssertionError("condition not reached")


def status_text(screen) -> str:
    return str(screen.query_one("#status").render())


def test_live_screen_folds_the_whole_stream_into_the_view():
    screen = RunScreen(RunView(title="fake", status="starting"), worker=FakeWorker(fake_stream()))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "done")
            assert screen.view.epochs == [0, 2, 4, 6, 8, 10]
            assert len(screen.view.curves["epoch"]) == 10
            assert "epoch 10/10" in status_text(screen) and "done" in status_text(screen)
            plane = screen.query_one("#plane")
            assert "binning · epoch 10" in str(plane.render())

    asyncio.run(scenario())


def test_p_switches_the_plotted_estimator():
    screen = RunScreen(RunView(), worker=FakeWorker(fake_stream()))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "done")
            await pilot.press("p")
            assert screen.plane == "kde_upper"
            assert "kde_upper · epoch 10" in str(screen.query_one("#plane").render())
            await pilot.press("p")
            assert screen.plane == "binning"

    asyncio.run(scenario())


def test_space_pauses_and_resumes_a_running_worker_and_s_stops_it():
    worker = FakeWorker(fake_stream(end=False), stays_alive=True)
    screen = RunScreen(RunView(), worker=worker)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: len(screen.view.epochs) == 6)
            await pilot.press("space")
            assert worker.paused and "paused" in status_text(screen)
            await pilot.press("space")
            assert not worker.paused
            await pilot.press("s")
            assert worker.stopped

    asyncio.run(scenario())


def test_a_worker_that_dies_without_saying_so_is_shown_as_failed():
    screen = RunScreen(RunView(), worker=FakeWorker(fake_stream(end=False)[:5]))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "failed")
            assert "worker process died" in screen.view.error
            assert "worker process died" in status_text(screen)
            assert screen.is_attached  # the app keeps working

    asyncio.run(scenario())


def test_a_worker_exception_shows_its_traceback_in_the_log():
    events = fake_stream(end=False)[:3] + [
        {"type": "error", "message": "RuntimeError: boom", "traceback": "Traceback (most recent call last):\n  boom"},
        {"type": "exit"}]
    screen = RunScreen(RunView(), worker=FakeWorker(events))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "failed")
            log_text = "\n".join(line.text for line in screen.query_one("#log").lines)
            assert "Traceback (most recent call last)" in log_text and "RuntimeError: boom" in log_text

    asyncio.run(scenario())


def test_a_diverged_run_shows_its_reason():
    events = fake_stream(end=False)[:4] + [
        {"type": "end", "status": "failed", "error": "diverged: training loss became nan at epoch 2", "summary": {}},
        {"type": "exit"}]
    screen = RunScreen(RunView(), worker=FakeWorker(events))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "failed")
            assert "diverged: training loss became nan" in status_text(screen)

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
def test_run_screen_draws_every_panel_at_small_and_large_sizes(size):
    screen = RunScreen(RunView(), worker=FakeWorker(fake_stream()))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=size) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "done")
            await pilot.pause(0.6)
            short = size[1] < 32  # a short terminal drops the schedule (the key keeps every layer)
            assert screen.query_one("#schedule").display is not short
            for panel in ("#plane", "#curves") if short else ("#plane", "#schedule", "#curves"):
                widget = screen.query_one(panel)
                assert widget.content_size.width > 10 and widget.content_size.height > 4
                assert str(widget.render()).strip()
            plane = str(screen.query_one("#plane").render())
            assert "I(X;T), bits" in plane and "I(T;Y), bits" in plane  # axis titles with units

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    summary = execute(tiny_config(runs, estimators={"binning": {}, "binning_fixed": {}}))
    return summary["run_dir"]


def test_replay_loads_every_measured_epoch_and_the_curves(finished_run):
    view = RunView.from_run_dir(finished_run)
    assert view.epochs == [0, 3, 6, 9, 12]
    assert view.status == "done" and view.plane_names == ["binning", "binning_fixed"]
    assert len(view.curves["epoch"]) == 12


def test_replay_cursor_moves_with_arrows_home_and_end(finished_run):
    screen = RunScreen(RunView.from_run_dir(finished_run))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("left")
            assert screen.cursor == 9
            await pilot.press("left", "left")
            assert screen.cursor == 3
            await pilot.press("home")
            assert screen.cursor == 0
            await pilot.press("right")
            assert screen.cursor == 3
            assert "epoch 3" in str(screen.query_one("#plane").render())
            await pilot.press("end")
            assert screen.cursor is None

    asyncio.run(scenario())


def test_replay_space_plays_the_epochs_to_the_end(finished_run):
    screen = RunScreen(RunView.from_run_dir(finished_run))
    seen = []  # the cursor after each step of the animation (a slow machine may finish it within the key press)
    step = screen.action_step
    screen.action_step = lambda delta: (step(delta), seen.append(screen.cursor))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("space")
            await settle(pilot, screen, lambda: not screen.playing)
            assert screen.cursor == 12 and seen == [3, 6, 9, 12]  # from the first epoch to the last

    asyncio.run(scenario())


def test_replay_follows_a_run_still_being_written(tmp_path):
    summary = execute(tiny_config(tmp_path))
    run = tmp_path / summary["run_dir"].split("/")[-1]
    lines = (run / "events.jsonl").read_bytes().splitlines(keepends=True)
    (run / "events.jsonl").write_bytes(b"".join(lines[:2]))
    view = RunView.from_run_dir(run)
    assert view.epochs == [0, 3]
    with open(run / "events.jsonl", "ab") as fh:
        fh.write(lines[2][:10])  # a torn line is not read...
    assert view.follow() == 0
    with open(run / "events.jsonl", "ab") as fh:
        fh.write(lines[2][10:] + lines[3])  # ...until it is complete
    assert view.follow() == 2 and view.epochs == [0, 3, 6, 9]


def test_a_followed_replay_shows_the_runs_end_as_soon_as_meta_says_so(tmp_path):
    from pathlib import Path

    from ibtui.rundir.store import acquire_lock

    run = Path(execute(tiny_config(tmp_path))["run_dir"])
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    writer = acquire_lock(run)  # as the process writing the run holds it
    screen = RunScreen(RunView.from_run_dir(run), follow=True)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.1)
            assert status_text(screen).startswith("running")
            (run / "meta.json").write_text(json.dumps(meta))  # the run ends; no event is appended
            writer.release()
            await pilot.pause(1.6)
            assert status_text(screen).startswith("done")

    asyncio.run(scenario())


def test_a_run_whose_writer_died_shows_killed_not_running(tmp_path):
    from pathlib import Path

    run = Path(execute(tiny_config(tmp_path))["run_dir"])
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))  # as a SIGKILL leaves it
    assert RunView.from_run_dir(run).status == "killed"
    assert [r["status"] for r in list_runs(tmp_path)] == ["killed"]


def test_compare_counts_follow_a_run_still_being_written(finished_run, tmp_path):
    from pathlib import Path

    run = Path(execute(tiny_config(tmp_path))["run_dir"])
    events = (run / "events.jsonl").read_bytes().splitlines(keepends=True)
    (run / "events.jsonl").write_bytes(b"".join(events[:2]))
    screen = CompareScreen([RunView.from_run_dir(finished_run), RunView.from_run_dir(run)])

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(160, 40)) as pilot:
            before = status_text(screen)
            (run / "events.jsonl").write_bytes(b"".join(events))
            await pilot.pause(1.6)
            after = status_text(screen)
            assert before.count("2 measured") == 1 and "2 measured" not in after and after != before

    asyncio.run(scenario())


def test_the_rate_holds_still_once_the_run_has_ended(monkeypatch):
    import ibtui.tui.state as state

    clock = [100.0]
    monkeypatch.setattr(state.time, "monotonic", lambda: clock[0])
    view = RunView()
    for event in fake_stream(epochs=10):
        if event["type"] == "epoch":
            clock[0] += 0.5
        view.apply(event)
    assert view.rate() == pytest.approx(2.0)  # 9 epochs in 4.5 s after the first
    clock[0] += 60.0
    assert view.rate() == pytest.approx(2.0) and view.eta() is None


def test_compare_screen_shows_two_runs_on_one_plane_with_one_cursor(finished_run, tmp_path):
    other = execute(tiny_config(tmp_path, model={"activation": "relu"}))["run_dir"]
    screen = CompareScreen([RunView.from_run_dir(finished_run), RunView.from_run_dir(other)])

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(160, 40)) as pilot:
            await pilot.press("home")
            assert screen.cursor == 0
            await pilot.press("right")
            assert screen.cursor == 3
            assert "2 runs · epoch 3" in str(screen.query_one("#compare-plane").render())
            header = str(screen.query_one("#compare-header").render())
            assert screen.views[0].title in header and screen.views[1].title in header

    asyncio.run(scenario())


def test_replay_of_a_foreign_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not an ibtui run directory"):
        RunView.from_run_dir(tmp_path)


def test_replay_of_a_corrupt_meta_is_a_clear_error(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    (tmp_path / "events.jsonl").write_text("")
    with pytest.raises(UserError, match="not valid JSON"):
        RunView.from_run_dir(tmp_path)


def test_replay_command_on_a_foreign_directory_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ibtui", "replay", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_list_runs_reports_status_preset_and_epochs(finished_run):
    from pathlib import Path

    (row,) = list_runs(Path(finished_run).parent)
    assert (row["status"], row["preset"], row["epochs"]) == ("done", "tiny", "12/12")


# ----------------------------------------------------------------------------- app, keys, palette


def test_help_lists_every_described_binding_of_the_screen_and_the_app_as_the_footer_writes_keys():
    screen = RunScreen(RunView(status="running"), worker=FakeWorker([], stays_alive=True))
    app = IbtuiApp()
    rows = dict(binding_rows(screen, app))
    for key in ("space", "s", "e", "p", "[", "]", "←", "→", "home", "end", "esc", "?", "q"):
        assert key in rows, key


def test_help_of_a_replay_does_not_offer_to_stop_it(finished_run):
    rows = binding_rows(RunScreen(RunView.from_run_dir(finished_run)), IbtuiApp())
    assert "Stop run" not in [description for _, description in rows] and ("e", "Export") in rows


def test_question_mark_opens_the_help_screen(finished_run):
    async def scenario():
        app = IbtuiApp(replay=[finished_run])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("question_mark")
            await pilot.pause(0.1)
            assert isinstance(app.screen, HelpScreen)
            text = str(app.screen.query_one("#help-text").render())
            assert "Export" in text and "Estimator" in text
            await pilot.press("escape")
            assert isinstance(app.screen, RunScreen)

    asyncio.run(scenario())


def test_command_palette_offers_every_screen_action(finished_run):
    async def scenario():
        app = IbtuiApp(replay=[finished_run])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Pause/Play", "Export", "Estimator", "Help", "Quit", "Back"} <= titles

    asyncio.run(scenario())


def test_quit_with_a_running_worker_asks_first(finished_run):
    async def scenario():
        app = IbtuiApp()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            worker = FakeWorker(fake_stream(end=False), stays_alive=True)
            app.workers_started.append(worker)
            await pilot.press("q")
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert not worker.stopped and app.is_running
            await pilot.press("q")
            await pilot.pause(0.1)
            await pilot.press("y")
            await pilot.pause(0.2)
        assert worker.stopped  # shut down on the way out

    asyncio.run(scenario())


def run_cell(home, row: int, header: str) -> str:
    """The text of the run list's cell in column ``header`` (the columns depend on the runs listed)."""
    return str(home.query_one("#runs").get_row_at(row)[1 + home.columns.index(header)])


def home_app(runs_dir) -> tuple[IbtuiApp, list]:
    """The app on its home screen, with launches recorded instead of started."""
    app = IbtuiApp(runs_dir=str(runs_dir))
    launched: list = []
    app.launch = lambda cfg, info=None: launched.append(cfg)
    return app, launched


def test_home_lists_presets_and_runs_and_rejects_a_bad_form_value(finished_run):
    from pathlib import Path

    from ibtui.tui.home import HomeScreen, field_id

    async def scenario():
        app, launched = home_app(Path(finished_run).parent)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            assert isinstance(home, HomeScreen)
            assert home.run_paths == [finished_run]
            assert "quick" in home.presets and home.preset == "quick"
            home.query_one(f"#{field_id('train.epochs')}").value = "-3"
            home.action_launch()
            await pilot.pause(0.1)
            assert launched == []
            home.query_one(f"#{field_id('train.epochs')}").value = "7"
            home.query_one(f"#{field_id('model.widths')}").value = "6,3"
            home.action_launch()
            assert launched and launched[0].train.epochs == 7 and launched[0].model.widths == [6, 3]

    asyncio.run(scenario())


def test_home_launches_into_the_runs_dir_it_lists(tmp_path):
    async def scenario():
        app, launched = home_app(tmp_path / "mine")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.screen.action_launch()
            assert launched and launched[0].store.runs_dir == str(tmp_path / "mine")

    asyncio.run(scenario())


def test_home_launches_nothing_while_the_highlighted_preset_fails_to_load(tmp_path, monkeypatch):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "quick.toml").write_text("[train]\nepochs = 5\n")  # no estimators: does not load
    monkeypatch.setenv("IBTUI_CONFIG_DIR", str(tmp_path))

    async def scenario():
        app, launched = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            assert home.preset == "quick" and home.cfg is None
            await pilot.press("l")
            await pilot.pause(0.1)
            assert launched == []
            assert any("cannot launch" in (n.title or "") for n in app._notifications)

    asyncio.run(scenario())


def test_home_run_list_follows_a_run_that_is_still_going(tmp_path):
    run = Path(execute(tiny_config(tmp_path))["run_dir"])
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running", "epochs_done": 3}))
    from ibtui.rundir.store import acquire_lock

    writer = acquire_lock(run)  # as the process writing the run holds it

    async def scenario():
        app, _ = home_app(run.parent)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert (run_cell(app.screen, 0, "status"), run_cell(app.screen, 0, "progress")) == \
                ("running", f"3/{meta['epochs_total']}")
            (run / "meta.json").write_text(json.dumps(meta))  # the run ends
            writer.release()
            await pilot.pause(2.5)
            assert run_cell(app.screen, 0, "status") == "done"

    asyncio.run(scenario())


def test_marking_a_run_stars_it_where_it_is_without_scrolling_the_list(tmp_path):
    for i in range(40):
        (tmp_path / f"run{i:02d}").mkdir()
        (tmp_path / f"run{i:02d}" / "meta.json").write_text(json.dumps(
            {"status": "done", "preset": "x", "created": f"2026-01-01T00:00:{i:02d}", "epochs_done": 1,
             "epochs_total": 1}))

    async def scenario():
        app, _ = home_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            table = home.query_one("#runs")
            table.focus()
            table.move_cursor(row=35)
            await pilot.pause(0.1)
            table.move_cursor(row=table.cursor_row - 3)
            await pilot.pause(0.1)
            scrolled, row = table.scroll_y, table.cursor_row
            assert scrolled > 0
            await pilot.press("m")
            await pilot.pause(0.1)
            assert (table.scroll_y, table.cursor_row) == (scrolled, row) and table.get_row_at(row)[0] == "*"
            assert home.marked == [home.run_paths[row]]

    asyncio.run(scenario())


def test_escape_leaves_the_home_form_so_its_keys_act_again(tmp_path):
    from ibtui.tui.home import field_id

    async def scenario():
        app, launched = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            epochs = app.screen.query_one(f"#{field_id('train.epochs')}")
            epochs.focus()
            await pilot.press("escape", "l")
            await pilot.pause(0.1)
            assert "l" not in epochs.value and len(launched) == 1

    asyncio.run(scenario())


def test_export_writes_csv_and_figures_of_the_plane(finished_run):
    screen = RunScreen(RunView.from_run_dir(finished_run))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("e")
            await pilot.pause(0.1)

    asyncio.run(scenario())
    from pathlib import Path

    exported = {p.suffix for p in (Path(finished_run) / "export").iterdir()}
    assert {".csv", ".png", ".pdf"} <= exported


# ----------------------------------------------------------------------------- boundaries and processes


def test_the_engine_and_estimators_never_import_textual():
    code = ("import sys, ibtui.engine.runner, ibtui.engine.process, ibtui.engine.data, ibtui.estimators, ibtui.config;"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'textual'];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_engine_source_file_mentions_a_textual_import():
    from pathlib import Path

    import ibtui

    root = Path(ibtui.__file__).parent
    for path in [*(root / "engine").rglob("*.py"), *(root / "estimators").rglob("*.py")]:
        source = path.read_text()
        assert "import textual" not in source and "from textual" not in source, path


def test_real_worker_process_streams_events_and_stops_on_request(tmp_path):
    from ibtui.engine.process import start_worker

    cfg = tiny_config(tmp_path, train={"epochs": 100000})
    worker = start_worker(cfg.to_dict())
    try:
        seen = []
        while True:
            event = worker.get(timeout=60)
            assert event is not None, "no event from the worker"
            seen.append(event["type"])
            if event["type"] == "measure" and event["epoch"] >= 3:
                worker.stop()
            if event["type"] == "exit":
                break
        assert seen[0] == "start" and "end" in seen
        worker.process.join(10)
        assert not worker.alive
        (run,) = tmp_path.iterdir()
        meta = json.loads((run / "meta.json").read_text())
        assert meta["status"] == "stopped"
        assert "epoch" in (run / "worker.log").read_text()
    finally:
        worker.shutdown()


def test_plots_follow_a_terminal_resize():
    screen = RunScreen(RunView(), worker=FakeWorker(fake_stream()))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(80, 24)) as pilot:
            await settle(pilot, screen, lambda: screen.view.status == "done")
            plane = screen.query_one("#plane")
            small = plane.content_size
            small_text = str(plane.render())
            await pilot.resize_terminal(200, 60)
            await pilot.pause(0.7)
            large = plane.content_size
            assert large.width > small.width and large.height > small.height
            large_lines = str(plane.render()).splitlines()
            assert len(large_lines) == large.height and len(large_lines) > len(small_text.splitlines())

    asyncio.run(scenario())


def test_status_line_shows_bracketed_error_text_verbatim():
    from rich.text import Text

    from ibtui.tui.run_screen import status_line

    view = RunView(status="failed", error="unknown key [estimators.x] in [/tmp/a]")
    assert "[estimators.x] in [/tmp/a]" in Text.from_markup(status_line(view, "binning", None)).plain


def test_f_shows_an_analysis_family_and_brackets_change_its_layer(finished_run, tmp_path):
    import shutil

    from ibtui.engine.analyze import analyze

    run = shutil.copytree(finished_run, tmp_path / "run")  # the module's run stays without analyses
    analyze(run, "binning_fixed", ("bins", [8, 30]))
    screen = RunScreen(RunView.from_run_dir(run))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("f")
            assert screen.family == "binning_fixed-bins"
            plane = str(screen.query_one("#plane").render())
            assert "binning_fixed-bins · layer h5:3" in plane and "bins=8" in plane and "bins=30" in plane
            await pilot.press("right_square_bracket")
            assert "layer softmax:2" in status_text(screen)
            await pilot.press("f")
            assert screen.family is None and "binning · epoch 12" in str(screen.query_one("#plane").render())

    asyncio.run(scenario())


def test_export_in_the_family_view_writes_every_plane_of_the_family(finished_run, tmp_path):
    import shutil

    from ibtui.engine.analyze import analyze

    run = shutil.copytree(finished_run, tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    analyze(run, "binning_fixed", ("bins", [8, 30]))
    screen = RunScreen(RunView.from_run_dir(run))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("f", "e")
            await pilot.pause(0.1)

    asyncio.run(scenario())
    names = sorted(p.name for p in (run / "export").iterdir() if p.suffix == ".csv")
    assert len(names) == 2 and any("8" in n for n in names) and any("30" in n for n in names)


def test_f_without_analyses_says_how_to_make_one(finished_run):
    screen = RunScreen(RunView.from_run_dir(finished_run))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("f")
            assert screen.family is None and "ibtui analyze" in screen.view.log[-1]

    asyncio.run(scenario())


def test_a_title_wider_than_the_plot_is_shortened_not_dropped():
    from ibtui.tui.plots import plane_figure

    view = RunView()
    view.apply({"type": "start", "run_dir": "x", "meta": {"layers": ["h1:2", "softmax:2"]}})
    view.apply({"type": "measure", "epoch": 10000, "planes": {"kde_upper": {"ixt": [1.0, 0.5], "ity": [0.5, 0.2]}}})
    figure = plane_figure(view, "kde_upper", 22, 12)
    assert "kde_upper · epo" in figure and "…" in figure


def test_epoch_events_alone_do_not_invalidate_the_plane_but_measures_do():
    view = RunView()
    for event in fake_stream(epochs=4, end=False)[:2]:
        view.apply(event)
    before = view.plane_version
    view.apply({"type": "epoch", "epoch": 1, "epochs": 4, "train_loss": 0.5, "train_acc": 0.8,
                "test_loss": 0.6, "test_acc": 0.7})
    assert view.plane_version == before and len(view.curves["epoch"]) == 1  # the curves still change
    view.apply(measure(1))
    assert view.plane_version == before + 1


def test_the_status_line_follows_epoch_events_within_a_redraw_interval():
    view = RunView(status="running", epochs_total=10)  # already running: no status change to redraw on
    epochs = [e for e in fake_stream(epochs=10, end=False) if e["type"] == "epoch"]
    screen = RunScreen(view, worker=FakeWorker(epochs, stays_alive=True))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.epochs_done == 10)
            await pilot.pause(0.7)  # one redraw interval (0.5 s) and a margin
            assert "epoch 10/10" in status_text(screen)

    asyncio.run(scenario())


def test_live_run_repaints_its_plots_at_most_once_a_second_but_keys_repaint_at_once(monkeypatch):
    screen = RunScreen(RunView(title="fake", status="starting"),
                       worker=FakeWorker(fake_stream(end=False), stays_alive=True))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.epochs == [0, 2, 4, 6, 8, 10])
            assert screen.view.running
            repaints = []
            monkeypatch.setattr(type(screen.query_one("#plane")), "refresh_if_stale",
                                lambda plot: repaints.append(plot.id))
            screen.tick()  # may repaint (the last repaint of plots could be a second old)
            repaints.clear()
            screen.view.plane_version += 1
            screen.tick()
            screen.tick()
            assert repaints == []  # within the second: status line only
            screen.redraw()  # what a key does
            assert "plane" in repaints

    asyncio.run(scenario())


def test_events_posted_while_the_screen_closes_reach_the_run_but_not_the_closed_screen():
    screen = RunScreen(RunView(), worker=FakeWorker(fake_stream(end=False), stays_alive=True))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.running)
            await screen.query_one("#status").remove()  # as during the app's shutdown
            screen.apply_events([{"type": "crashed", "message": "the worker process died (exit code -9)"}])
            assert screen.view.status == "failed"  # the run's state (the app's) has it; the screen raised nothing

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- runs you can tell apart


def labelled_run(runs_dir, name=None, tags=(), note=None, **sections):
    """A finished tiny run whose meta.json records its overrides of the tiny config, name, tags and note."""
    from ibtui.runinfo import run_info

    base = tiny_config(runs_dir)
    cfg = tiny_config(runs_dir, **sections)
    return Path(execute(cfg, info=run_info(base.to_dict(), cfg.to_dict(), name, tags, note))["run_dir"])


def test_the_run_list_shows_the_config_keys_that_differ_as_columns(tmp_path):
    labelled_run(tmp_path, name="tanh baseline")
    labelled_run(tmp_path, model={"activation": "relu"}, train={"epochs": 6})

    async def scenario():
        app, _ = home_app(tmp_path)
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            assert {"activation", "epochs"} <= set(home.columns) and "lr" not in home.columns
            by_run = {run_cell(home, i, "run"): i for i in range(2)}
            assert run_cell(home, by_run["tanh baseline"], "activation") == "tanh"
            (other,) = set(by_run) - {"tanh baseline"}
            assert run_cell(home, by_run[other], "activation") == "relu"

    asyncio.run(scenario())


def test_a_live_run_view_and_the_replay_title_say_what_was_overridden(tmp_path):
    run = labelled_run(tmp_path, name="mine", tags=["x"], note="a note", model={"activation": "relu"})
    view = RunView.from_run_dir(run)
    assert view.label == "tiny · relu" and view.heading == "mine · tiny · relu"
    assert {"settings: tiny · relu", "name: mine", "tags: x", "note: a note"} <= set(view.log)


def test_a_run_name_with_markup_is_shown_verbatim_in_the_run_list(tmp_path):
    labelled_run(tmp_path, name="[b]bold[/b] [link=http://x]y")

    async def scenario():
        app, _ = home_app(tmp_path)
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.2)
            assert run_cell(app.screen, 0, "run") == "[b]bold[/b] [link=http://x]y"

    asyncio.run(scenario())


def test_slash_filters_the_run_list_by_name_preset_tag_or_status(tmp_path):
    labelled_run(tmp_path, name="alpha", tags=["keep"])
    labelled_run(tmp_path, name="beta")

    async def scenario():
        app, _ = home_app(tmp_path)
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            home.query_one("#runs").focus()
            await pilot.press("slash", "k", "e", "e", "p")
            await pilot.pause(0.1)
            assert [r["name"] for r in home.rows] == ["alpha"]
            assert "filter 'keep': 1 of 2" in str(home.query_one("#runs-title").render())
            await pilot.press("enter")
            assert home.focused is home.query_one("#runs")

    asyncio.run(scenario())


def test_an_empty_run_list_says_to_press_l(tmp_path):
    async def scenario():
        app, _ = home_app(tmp_path / "none")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            hint = app.screen.query_one("#runs-hint")
            assert hint.display and "no runs yet — press l to launch one" in str(hint.render())

    asyncio.run(scenario())


def test_the_run_list_shows_start_times_relative_and_durations():
    from ibtui.tui.state import run_table

    now = 1_800_000_000.0
    rows = [{"id": "a", "path": "a", "status": "running", "preset": "p", "created": "", "epochs": "1/2",
             "started": now - 185, "config": {}},
            {"id": "b", "path": "b", "status": "done", "preset": "p", "created": "", "epochs": "2/2",
             "started": now - 7300, "wall_seconds": 42.0, "config": {}}]
    headers, cells = run_table(rows, now)
    started, took = headers.index("started"), headers.index("took")
    assert (cells[0][started], cells[0][took]) == ("3 min ago", "3 min 5 s")
    assert (cells[1][started], cells[1][took]) == ("2 h ago", "42 s")


def test_the_launch_form_records_name_tags_note_and_overrides(tmp_path):
    from ibtui.tui.home import field_id

    async def scenario():
        app = IbtuiApp(runs_dir=str(tmp_path))
        launched: list = []
        app.launch = lambda cfg, info=None: launched.append((cfg, info))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            home.query_one(f"#{field_id('run.name')}").value = "first"
            home.query_one(f"#{field_id('run.tags')}").value = "a, b"
            home.query_one(f"#{field_id('run.note')}").value = "why"
            home.query_one(f"#{field_id('train.epochs')}").value = "300"
            home.query_one(f"#{field_id('model.activation')}").value = "relu"
            home.action_launch()
            ((cfg, info),) = launched
            assert (info["name"], info["tags"], info["note"]) == ("first", ["a", "b"], "why")
            assert info["overrides"] == {"model.activation": "relu", "train.epochs": 300}
            assert cfg.description.startswith("quick · relu · 300 epochs")
            home.query_one(f"#{field_id('run.tags')}").value = "bad tag!"
            home.action_launch()
            assert len(launched) == 1  # refused, with a message

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- control you never lose


def live_stream(run_dir) -> list[dict]:
    """A live run writing ``run_dir`` that has not ended."""
    events = fake_stream(end=False)
    events[0] = {**events[0], "run_dir": str(run_dir)}
    return events


def test_a_launched_run_is_controllable_again_after_esc_and_reopening(tmp_path):
    from ibtui.tui.home import HomeScreen
    from ibtui.tui.live import LiveRun

    worker = FakeWorker(live_stream(tmp_path / "live-run"), stays_alive=True)

    async def scenario():
        app = IbtuiApp(runs_dir=str(tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.go_live(LiveRun(worker, RunView(status="starting")))
            await pilot.pause(0.3)
            await pilot.press("escape")
            assert isinstance(app.screen, HomeScreen)
            for _ in range(100):  # the run keeps going without its screen: the app drains it
                await pilot.pause(0.02)
                if len(app.live_runs[0].view.epochs) == 6:
                    break
            assert len(app.live_runs[0].view.epochs) == 6
            app.open_replay([str(tmp_path / "live-run")])
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, RunScreen) and screen.live and len(screen.view.epochs) == 6
            await pilot.press("space")
            assert worker.paused
            await pilot.press("s")
            assert worker.stopped

    asyncio.run(scenario())


def test_the_run_list_stops_a_run_this_app_is_running(tmp_path):
    from ibtui.tui.live import LiveRun

    run = labelled_run(tmp_path)
    worker = FakeWorker(live_stream(run), stays_alive=True)

    async def scenario():
        app = IbtuiApp(runs_dir=str(tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.go_live(LiveRun(worker, RunView(status="starting")))
            await pilot.pause(0.3)
            await pilot.press("escape")
            app.screen.query_one("#runs").focus()
            await pilot.press("s")
            assert worker.stopped
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Stop run", "Resume run", "Filter runs"} <= titles

    asyncio.run(scenario())


def test_u_on_the_run_list_resumes_a_killed_run(tmp_path):
    run = labelled_run(tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))  # as a SIGKILL leaves it

    async def scenario():
        app, _ = home_app(tmp_path)
        resumed: list = []
        app.resume_run = resumed.append
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert run_cell(app.screen, 0, "status") == "killed"
            app.screen.query_one("#runs").focus()
            await pilot.press("u")
            assert resumed == [str(run)]
        assert any("u on the run list resumes it" in line for line in RunView.from_run_dir(run).log)

    asyncio.run(scenario())


def test_a_live_views_eta_counts_the_measurements_its_schedule_has_left():
    from ibtui.config import ScheduleConfig

    view = RunView(schedule=ScheduleConfig(kind="every_n", every=2))
    for event in fake_stream(epochs=10, end=False)[:6]:  # through epoch 3; epochs 0 and 2 measured
        if event["type"] == "epoch":
            event = {**event, "seconds": 0.5, **({"measure_seconds": 2.0} if event["epoch"] in (1, 3) else {})}
        view.apply(event)
    assert view.epochs_done == 3 and view.epochs == [0, 2]
    assert view.eta() == pytest.approx(7 * 0.5 + 4 * 2.0)  # epochs 4..10 trained, 4, 6, 8, 10 measured


def test_resume_from_the_run_list_continues_a_stopped_run_live_to_its_end(tmp_path):
    from conftest import StopAfter

    from ibtui.engine.process import context

    context()  # as run_tui does before the app starts
    cut = execute(tiny_config(tmp_path, train={"epochs": 30}), stop=StopAfter(8))
    assert cut["status"] == "stopped"

    async def scenario():
        app = IbtuiApp(runs_dir=str(tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.screen.query_one("#runs").focus()
            await pilot.press("u")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, RunScreen) and screen.live and screen.view.epochs == [0, 3, 6]
            for _ in range(600):
                await pilot.pause(0.2)
                if screen.view.status == "done":
                    break
            assert screen.view.epochs == list(range(0, 31, 3))
            assert screen.view.curves["epoch"] == [float(e) for e in range(1, 31)]  # no epoch twice

    asyncio.run(scenario())
    assert json.loads((Path(cut["run_dir"]) / "meta.json").read_text())["status"] == "done"


def test_an_estimator_only_some_runs_have_is_one_yes_no_column():
    from ibtui.tui.state import run_table

    def row(name, config):
        return {"id": name, "path": name, "status": "done", "preset": "p", "created": "", "epochs": "1/1",
                "config": config}

    headers, cells = run_table([row("a", {"model.activation": "tanh", "estimators.kde": True,
                                          "estimators.kde.noise_variance": 0.001}),
                                row("b", {"model.activation": "relu"})])
    assert "kde" in headers and "noise_variance" not in headers and "activation" in headers
    assert [c[headers.index("kde")] for c in cells] == ["yes", "no"]


def test_compare_titles_name_each_runs_overrides(tmp_path):
    first = labelled_run(tmp_path / "a", name="base")
    second = labelled_run(tmp_path / "b", model={"activation": "relu"}, train={"epochs": 6})
    screen = CompareScreen([RunView.from_run_dir(first), RunView.from_run_dir(second)])

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.3)
            header = str(screen.query_one("#compare-header").render())
            first_line, second_line = header.splitlines()[:2]
            assert "base · tiny" in first_line and "tiny · relu · 6 epochs" in second_line

    asyncio.run(scenario())


def test_the_palette_has_one_quit_and_it_asks_first_while_a_run_is_going(tmp_path):
    async def scenario():
        app, _ = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.workers_started.append(FakeWorker(fake_stream(end=False), stays_alive=True))
            quits = [c for c in app.get_system_commands(app.screen) if c.title == "Quit"]
            assert len(quits) == 1
            result = quits[0].callback()
            if asyncio.iscoroutine(result):
                await result
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen) and app.is_running

    asyncio.run(scenario())


def test_the_screenshot_writes_next_to_the_runs_or_to_ibtui_screenshot_dir(tmp_path, monkeypatch):
    from ibtui.tui.app import screenshot_dir

    assert screenshot_dir(str(tmp_path / "runs"), {}) == tmp_path / "screenshots"
    assert screenshot_dir("runs", {"IBTUI_SCREENSHOT_DIR": str(tmp_path / "shots")}) == tmp_path / "shots"
    monkeypatch.setenv("IBTUI_SCREENSHOT_DIR", str(tmp_path / "shots"))

    async def scenario():
        app, _ = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.action_screenshot()
            for _ in range(50):
                await pilot.pause(0.1)
                if list((tmp_path / "shots").glob("*.svg")):
                    break
            assert len(list((tmp_path / "shots").glob("*.svg"))) == 1

    asyncio.run(scenario())


def test_a_mark_shows_in_the_run_list_at_once(tmp_path):
    for i in range(3):
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "meta.json").write_text(json.dumps(
            {"status": "done", "preset": "x", "created": f"2026-01-01T00:00:0{i}", "epochs_done": 1, "epochs_total": 1}))

    async def scenario():
        app, _ = home_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            table = app.screen.query_one("#runs")
            table.focus()
            await pilot.press("m")
            await pilot.pause(0.1)  # well under the run list's refresh interval
            assert table.render_line(1).text.lstrip().startswith("*")  # drawn, not only stored

    asyncio.run(scenario())


def test_typing_into_a_form_field_inserts_the_characters_the_screen_binds(tmp_path):
    from ibtui.tui.home import HomeScreen, field_id

    async def scenario():
        app, launched = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            name = app.screen.query_one(f"#{field_id('run.name')}")
            name.focus()
            await pilot.press(*"lqs/mcour?h1", "ctrl+r")  # ctrl+r (reset) is no character: it resets
            await pilot.pause(0.1)
            assert launched == [] and isinstance(app.screen, HomeScreen) and app.is_running
            assert not app.screen.query_one("#runs-filter").has_class("shown")
            name.value = ""
            await pilot.press(*"lqs/mcour?h1")
            assert name.value == "lqs/mcour?h1"

    asyncio.run(scenario())


def test_reset_puts_the_presets_values_back_in_the_form(tmp_path):
    from ibtui.tui.home import field_id

    async def scenario():
        app, _ = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            epochs = home.query_one(f"#{field_id('train.epochs')}")
            before = epochs.value
            epochs.value, home.query_one(f"#{field_id('run.name')}").value = "77", "mine"
            epochs.focus()
            await pilot.press("ctrl+r")
            await pilot.pause(0.1)
            assert epochs.value == before and home.query_one(f"#{field_id('run.name')}").value == ""
            assert any(c.title == "Reset the form to the preset" for c in app.get_system_commands(home))

    asyncio.run(scenario())


def test_every_form_label_fits_on_one_line_at_120_columns(tmp_path):
    async def scenario():
        app, _ = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            labels = list(app.screen.query(".field-label"))
            room = app.screen.query_one("#form").scrollable_content_region.width  # the form's, not the label's
            assert labels and room > 0
            for label in labels:
                assert label.size.height == 1 and len(str(label.render())) <= room, str(label.render())

    asyncio.run(scenario())


def test_the_form_sets_learning_rate_optimiser_and_batch_size_checked_like_set(tmp_path):
    from ibtui.tui.home import field_id

    async def scenario():
        app, launched = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            home.query_one(f"#{field_id('train.batch_size')}").value = "0"
            home.action_launch()
            await pilot.pause(0.1)
            assert launched == [] and any("batch_size" in str(n.message) for n in app._notifications)
            home.query_one(f"#{field_id('train.batch_size')}").value = "64"
            home.query_one(f"#{field_id('train.lr')}").value = "0.01"
            home.query_one(f"#{field_id('train.optimizer')}").value = "sgd"
            home.action_launch()
            cfg = launched[0]
            assert (cfg.train.batch_size, cfg.train.lr, cfg.train.optimizer) == (64, 0.01, "sgd")

    asyncio.run(scenario())


def test_a_value_for_an_estimator_not_selected_is_refused_with_a_message(tmp_path):
    from ibtui.tui.home import field_id

    async def scenario():
        app, launched = home_app(tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            home = app.screen
            home.query_one(f"#{field_id('estimators')}").value = "binning"
            home.query_one(f"#{field_id('estimators.binning_fixed.bins')}").value = "40"
            home.action_launch()
            await pilot.pause(0.1)
            assert launched == []
            assert any("binning_fixed is not among the estimators" in str(n.message) for n in app._notifications)
            home.query_one(f"#{field_id('estimators.binning_fixed.bins')}").value = ""
            home.action_launch()
            assert launched and list(launched[0].estimators) == ["binning"]

    asyncio.run(scenario())
