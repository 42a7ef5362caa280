"""The sweep screen, driven by Textual's Pilot over a real (tiny) sweep directory."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from ibtui.engine.sweep import Outcome, Sweep, SweepSpec, cell_result, parse_grid, run_cell
from ibtui.tui.app import IbtuiApp
from ibtui.tui.run_screen import RunScreen
from ibtui.tui.state import SweepView, list_runs
from ibtui.tui.sweep_screen import SweepScreen

TINY = ["train.epochs=6", "schedule.kind=every_n", "schedule.every=3", "estimators.kde=false", 'train.device="cpu"']


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A two-cell sweep (tanh, relu) run in this process; the relu cell is kept aside as a copy."""
    root = tmp_path_factory.mktemp("sweeps")
    sweep = Sweep(SweepSpec("quick", [parse_grid("model.activation=tanh,relu")], TINY), root)
    sweep.open()
    for cell in sweep.cells:
        run_cell(sweep.spec.config(cell).to_dict(), sweep.cell_dir(cell))
        sweep.record(Outcome(cell, "done", 1, None, cell_result(sweep.cell_dir(cell))))
    return sweep


def copy_of(sweep, tmp_path, keep_cells: int):
    """The sweep directory with only its first ``keep_cells`` cells run (the rest not started)."""
    target = tmp_path / sweep.root.name
    shutil.copytree(sweep.root, target)
    for cell in sweep.cells[keep_cells:]:
        shutil.rmtree(target / cell.name)
    (target / "summary.json").unlink()
    return target


def table_rows(screen):
    table = screen.query_one("#cells")
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_replaying_a_sweep_shows_a_row_and_a_small_plane_per_cell(finished_sweep):
    async def scenario():
        app = IbtuiApp(replay=[str(finished_sweep.root)])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, SweepScreen)
            rows = table_rows(screen)
            assert [r[1] for r in rows] == ["tanh", "relu"] and [r[2] for r in rows] == ["done", "done"]
            assert all(0.0 <= float(r[4]) <= 1.0 for r in rows)  # test accuracy
            assert len(screen.query("#mini-grid PlotView")) == 2
            await pilot.pause(0.3)
            assert all(p.render_count >= 1 for p in screen.query("#mini-grid PlotView"))

    asyncio.run(scenario())


def test_enter_on_a_cell_opens_its_replay_and_escape_returns_to_the_sweep(finished_sweep):
    async def scenario():
        app = IbtuiApp(replay=[str(finished_sweep.root)])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("down", "enter")
            await pilot.pause(0.3)
            assert isinstance(app.screen, RunScreen)
            assert app.screen.view.run_dir == str(finished_sweep.cell_dir(finished_sweep.cells[1]))
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert isinstance(app.screen, SweepScreen)

    asyncio.run(scenario())


def test_the_sweep_screen_follows_a_cell_that_finishes_while_it_is_open(finished_sweep, tmp_path):
    root = copy_of(finished_sweep, tmp_path, keep_cells=1)

    async def scenario():
        app = IbtuiApp(replay=[str(root)])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            screen = app.screen
            assert [r[2] for r in table_rows(screen)] == ["done", "pending"]
            await pilot.press("down", "enter")  # not started: nothing to open
            await pilot.pause(0.1)
            assert isinstance(app.screen, SweepScreen)
            shutil.copytree(finished_sweep.cell_dir(finished_sweep.cells[1]), root / finished_sweep.cells[1].name)
            for _ in range(60):
                await pilot.pause(0.05)
                if [r[2] for r in table_rows(screen)] == ["done", "done"]:
                    break
            assert [r[2] for r in table_rows(screen)] == ["done", "done"]

    asyncio.run(scenario())


def test_a_failed_cell_shows_the_sweeps_verdict_and_attempts(finished_sweep, tmp_path):
    root = copy_of(finished_sweep, tmp_path, keep_cells=2)
    summary = json.loads((finished_sweep.root / "summary.json").read_text())
    summary["cells"][1].update(status="failed", attempts=3, error="diverged: loss is nan")
    (root / "summary.json").write_text(json.dumps(summary))
    view = SweepView.from_dir(root)
    assert [c.status for c in view.cells] == ["done", "failed"]
    assert view.cells[1].attempts == 3 and view.cells[1].error.startswith("diverged")


def test_the_home_screens_run_list_shows_a_sweep_with_its_progress(finished_sweep, tmp_path):
    root = copy_of(finished_sweep, tmp_path, keep_cells=1)
    (row,) = list_runs(tmp_path)
    assert row["path"] == str(root) and row["status"] == "sweep 1/2 done" and row["epochs"] == "2 cells"
