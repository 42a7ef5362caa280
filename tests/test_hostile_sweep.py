"""Hostile sweep directories: crafted cells (their meta.json, planes.npz, curves, the cell directory
itself), results.jsonl and sweep.json, through the sweep's re-run (the driver's steps and the
cells' ``run_cell``, as ``ibtui sweep`` runs them) and through the app's sweep screen.

Each case: a one-line error or a cell re-run in place, never a traceback, a hang or a write
outside the sweep directory.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import shutil

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from ibtui.cli import app, sweep_table
from ibtui.engine.sweep import Outcome, Sweep, SweepSpec, cell_result, parse_grid, run_cell
from ibtui.errors import UserError
from test_hostile import CASES, DEEP, crafted, fifo, meta_with, pristine, snapshot, symlink_out  # noqa: F401

TINY = ["train.epochs=3", "schedule.kind=every", "estimators.kde=false", 'train.device="cpu"']
GRID = "model.activation=tanh,relu"


def spec() -> SweepSpec:
    return SweepSpec("quick", [parse_grid(GRID)], TINY)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A done two-cell sweep, run in this process, to copy and damage."""
    root = tmp_path_factory.mktemp("sweeps")
    job = Sweep(spec(), root, "s")
    job.open()
    for cell in job.cells:
        run_cell(job.spec.config(cell).to_dict(), job.cell_dir(cell))
        job.record(Outcome(cell, "done", 1, None, cell_result(job.cell_dir(cell))))
    return job.root


def stopped(cell) -> None:
    meta_with(cell, status="stopped")


def move_out(cell, outside) -> None:
    shutil.move(str(cell), outside / "cell")
    cell.symlink_to(outside / "cell")
    stopped(outside / "cell")


CELL_CASES = {
    "planes.npz of object dtype": lambda cell, out: np.savez(cell / "planes.npz", epochs=np.array([object()], dtype=object)),
    "planes.npz of the wrong rank": lambda cell, out: np.savez(cell / "planes.npz", epochs=np.zeros((2, 2))),
    "truncated planes.npz": lambda cell, out: (cell / "planes.npz").write_bytes(b"PK\x03\x04trunc"),
    "planes.npz a fifo": lambda cell, out: (stopped(cell), fifo(cell / "planes.npz")),
    "planes.npz a symlink out": lambda cell, out: (stopped(cell), symlink_out(cell / "planes.npz", out / "victim.npz")),
    "meta.json a fifo": lambda cell, out: fifo(cell / "meta.json"),
    "meta.json a symlink out": lambda cell, out: symlink_out(cell / "meta.json", out / "victim.json"),
    "meta.json nested deeply": lambda cell, out: (cell / "meta.json").write_text(DEEP),
    "truncated meta.json": lambda cell, out: (cell / "meta.json").write_text((cell / "meta.json").read_text()[:40]),
    "markup in meta.json": lambda cell, out: meta_with(cell, status="[/x]", id="[bold]x[/]", error="[/]",
                                                       layers=["[/]"] * 6),
    "worker.log a symlink out": lambda cell, out: (stopped(cell), symlink_out(cell / "worker.log", out / "victim.log")),
    "curves.npz a symlink out": lambda cell, out: (stopped(cell), symlink_out(cell / "curves.npz", out / "victim.npz")),
    "the cell directory a symlink out": move_out,
}


def damaged(finished, tmp_path, damage):
    root = tmp_path / "runs" / "s"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(finished, root, symlinks=True)
    damage(root / spec().cells()[0].name, outside)
    return root, outside


def rerun(root) -> dict:
    """What `ibtui sweep` does on the same command, in this process: the cells not done are run
    (``run_cell``, resumed or set aside and started again), recorded, summarised and tabled."""
    job = Sweep(spec(), root.parent, root.name)
    job.open()
    done, todo = job.pending()
    for cell in done:
        job.outcomes[cell.name] = Outcome(cell, "done", 0, None, cell_result(job.cell_dir(cell)))
    for cell in todo:
        try:
            run_cell(job.spec.config(cell).to_dict(), job.cell_dir(cell))
        except UserError as exc:
            assert "\n" not in str(exc)
        result = cell_result(job.cell_dir(cell))
        job.record(Outcome(cell, result["status"], 1, result["error"], result))
    summary = job.summary()
    Console(file=open("/dev/null", "w")).print(sweep_table(summary))  # markup from a cell is text
    return summary


@pytest.mark.parametrize("case", list(CELL_CASES))
def test_a_crafted_cell_is_rerun_in_place_and_nothing_outside_changes(finished, tmp_path, case):
    root, outside = damaged(finished, tmp_path, CELL_CASES[case])
    before = snapshot(outside)
    faulthandler.dump_traceback_later(120, exit=True)  # a hang fails the test run, loudly
    try:
        summary = rerun(root)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert snapshot(outside) == before, "something was written outside the sweep"
    assert [c["status"] for c in summary["cells"]] == ["done", "done"]
    assert not (root / spec().cells()[0].name).is_symlink()


@pytest.mark.parametrize("kind", ["symlink out", "fifo"])
def test_a_results_jsonl_that_is_not_a_regular_file_is_refused_before_any_cell_runs(finished, tmp_path, kind):
    root, outside = damaged(finished, tmp_path, lambda cell, out: shutil.rmtree(cell))
    if kind == "fifo":
        fifo(root / "results.jsonl")
    else:
        symlink_out(root / "results.jsonl", outside / "victim.jsonl")
    before = snapshot(outside)
    result = CliRunner().invoke(app, ["sweep", "-p", "quick", "--grid", GRID, *(a for s in TINY for a in ("--set", s)),
                                      "--runs-dir", str(root.parent), "--name", "s", "--workers", "1", "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1, result.output
    assert "results.jsonl is not a regular file" in result.output
    assert snapshot(outside) == before
    assert not (root / spec().cells()[0].name).exists()  # no cell was started


APP_CASES = {
    "markup in a cell's layers and planes": lambda root, cell: meta_with(cell, layers=["[/]"] * 6, planes=["[/x]"]),
    "markup in a plane name of events.jsonl": lambda root, cell: (cell / "events.jsonl").write_text(
        (cell / "events.jsonl").read_text().replace('"binning"', '"[/x]"')),
    "markup in the grid of sweep.json": lambda root, cell: _edit_sweep(root),
    "a cell's meta.json a fifo": lambda root, cell: fifo(cell / "meta.json"),
    "a cell's meta.json nested deeply": lambda root, cell: (cell / "meta.json").write_text(DEEP),
    "a cell's curves.npz of object dtype": lambda root, cell: (
        (cell / "curves.jsonl").unlink(), np.savez(cell / "curves.npz", epoch=np.array([object()], dtype=object))),
}


def _edit_sweep(root) -> None:
    description = json.loads((root / "sweep.json").read_text())
    description["grid"] = [["model.[/x]", ["[/]", "[bold]"]]]
    for cell in description["cells"]:
        cell["overrides"] = {"model.[/x]": "[/]"}
    (root / "sweep.json").write_text(json.dumps(description))


@pytest.mark.parametrize("case", list(APP_CASES))
def test_the_sweep_screen_shows_a_crafted_sweep_and_answers_keys(finished, tmp_path, case):
    from ibtui.tui.app import IbtuiApp
    from ibtui.tui.sweep_screen import SweepScreen

    root, _ = damaged(finished, tmp_path, lambda cell, out: None)
    APP_CASES[case](root, root / spec().cells()[0].name)

    async def scenario():
        app = IbtuiApp(replay=[str(root)])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            assert isinstance(app.screen, SweepScreen)
            await pilot.press("p", "down", "enter")  # another estimator; open the second cell
            await pilot.pause(0.3)
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert isinstance(app.screen, SweepScreen) and app.is_running
            assert app.screen.query_one("#cells").row_count == 2

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("case", list(CASES))
def test_the_hostile_run_corpus_as_a_sweep_cell_is_resumed_or_set_aside_without_writing_outside(
        pristine, tmp_path, case):
    """Every crafted run of tests/test_hostile.py in a cell's place, through the cell's own
    process body (``run_cell``: resume it, or set it aside and start the cell again)."""
    job = Sweep(spec(), tmp_path / "runs", "s")
    job.open()
    cell = job.cells[0]
    run, outside = crafted(pristine, tmp_path, case)
    shutil.move(str(run), job.cell_dir(cell))
    before = snapshot(outside)
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        run_cell(job.spec.config(cell).to_dict(), job.cell_dir(cell))
    except UserError as exc:
        assert "\n" not in str(exc)
    finally:
        faulthandler.cancel_dump_traceback_later()
    result = cell_result(job.cell_dir(cell))
    assert result["status"] in ("done", "stopped", "failed", "killed", "unknown"), result
    assert snapshot(outside) == before, "something was written outside the sweep"
