"""Hostile inputs: a corpus of crafted run directories and overrides through every front door.

Each case must give one `error:` line and exit 2 (or a one-line warning and a usable result), never
a traceback, never a hang, never a write outside the directory, and no change to the run's files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from ibtui.cli import app
from ibtui.engine.runner import execute
from ibtui.errors import UserError
from ibtui.rundir.reader import load_run

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small stopped run (resumable) to copy and damage."""
    import threading

    root = tmp_path_factory.mktemp("pristine")
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "measure" and event["epoch"] >= 6:
            stop.set()

    run = execute(tiny_config(root), on_event=on_event, stop=stop)["run_dir"]
    return Path(run)


def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def symlink_out(path: Path, target: Path) -> None:
    target.write_bytes(b"outside\n")
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def meta_with(run: Path, **changes) -> None:
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, **changes}))


CASES = {
    "fifo meta.json": lambda run, out: fifo(run / "meta.json"),
    "fifo events.jsonl": lambda run, out: fifo(run / "events.jsonl"),
    "fifo config.toml": lambda run, out: fifo(run / "config.toml"),
    "fifo curves.jsonl": lambda run, out: fifo(run / "curves.jsonl"),
    "fifo checkpoint": lambda run, out: fifo(run / "checkpoints" / "e0000006.npz"),
    "deep json meta": lambda run, out: (run / "meta.json").write_text(DEEP),
    "deep json events": lambda run, out: (run / "events.jsonl").write_text(DEEP + "\n"),
    "deep toml config": lambda run, out: (run / "config.toml").write_text("a = " + DEEP),
    "meta a list": lambda run, out: (run / "meta.json").write_text("[1, 2]"),
    "meta without layers": lambda run, out: meta_with(run, layers="h1"),
    "huge layer count": lambda run, out: meta_with(run, layers=["x"] * 100_000),
    "markup in meta": lambda run, out: meta_with(run, status="[/x]", id="[bold red]boom[/]", error="[/]", device="[link=x]"),
    "infinite values in events": lambda run, out: (run / "events.jsonl").write_text(
        (run / "events.jsonl").read_text().replace('"ixt":[', '"ixt":[Infinity,', 1)),
    "huge floats in events": lambda run, out: (run / "events.jsonl").write_text(
        (run / "events.jsonl").read_text().replace('"ixt":[', '"ixt":[1e308,', 1)),
    "pickled curves.npz": lambda run, out: np.savez(run / "curves.npz", epoch=np.array([object()], dtype=object)),
    "curves of wrong rank": lambda run, out: ((run / "curves.jsonl").unlink(),
                                              np.savez(run / "curves.npz", epoch=np.zeros((2, 2)), train_loss=np.zeros(3))),
    "symlinked worker.log": lambda run, out: symlink_out(run / "worker.log", out / "victim.log"),
    "symlinked events.jsonl": lambda run, out: symlink_out(run / "events.jsonl", out / "victim.jsonl"),
    "symlinked export dir": lambda run, out: ((out / "exported").mkdir(), (run / "export").symlink_to(out / "exported")),
    "symlinked lock": lambda run, out: symlink_out(run / ".lock", out / "victim.lock"),
    "symlinked checkpoints": lambda run, out: (shutil.copytree(run / "checkpoints", out / "ck"),
                                               shutil.rmtree(run / "checkpoints"),
                                               (run / "checkpoints").symlink_to(out / "ck")),
    "truncated checkpoint": lambda run, out: (run / "checkpoints" / "e0000006.npz").write_bytes(b"PK\x03\x04trunc"),
    "malformed rng state": lambda run, out: _edit_checkpoint(run, "resume.rng", lambda v: v[:, :7]),
    "skip out of range": lambda run, out: _edit_checkpoint(run, "resume.skip", lambda v: np.asarray(10**9)),
    "widths changed": lambda run, out: (run / "config.toml").write_text(
        (run / "config.toml").read_text().replace("widths = [\n    10,", "widths = [\n    11,")),
    "oversized meta": lambda run, out: (run / "meta.json").write_bytes(b" " * (5 << 20) + b"{}"),
    "non-utf8 config": lambda run, out: (run / "config.toml").write_bytes(b"\xff\xfe\x00"),
    "empty directory": lambda run, out: [p.unlink() for p in run.iterdir() if p.is_file()],
}


def _edit_checkpoint(run: Path, key: str, change) -> None:
    path = run / "checkpoints" / "e0000006.npz"
    arrays = dict(np.load(path))
    arrays[key] = change(arrays[key])
    np.savez(path, **arrays)


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = b"->" + os.readlink(path).encode()
        elif path.is_file():
            out[str(path.relative_to(root))] = path.read_bytes()[:1 << 16]
    return out


def crafted(pristine: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(pristine, run)
    CASES[case](run, outside)
    return run, outside


FRONT_DOORS = {
    "resume": ["resume", "{run}", "--quiet"],
    "analyze": ["analyze", "{run}", "-e", "binning", "--set", "bin_size=0.07"],
    "export": ["export", "{run}", "--plane", "binning", "--format", "csv"],
}


@pytest.mark.parametrize("door", list(FRONT_DOORS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_run_directory_is_refused_cleanly_by_every_command(pristine, tmp_path, case, door):
    run, outside = crafted(pristine, tmp_path, case)
    before_outside = snapshot(outside)
    args = [a.format(run=run) for a in FRONT_DOORS[door]]
    result = subprocess.run([sys.executable, "-m", "ibtui", *args], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-1500:]
    assert result.returncode in (0, 1, 2), output[-500:]
    if result.returncode == 2:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:"), result.stderr[-500:]
    assert snapshot(outside) == before_outside, "something was written outside the run directory"


@pytest.mark.parametrize("case", list(CASES))
def test_the_reader_and_the_app_state_refuse_or_read_a_crafted_run_without_hanging(pristine, tmp_path, case):
    from ibtui.tui.state import RunView, list_runs

    run, outside = crafted(pristine, tmp_path, case)
    before, before_outside = snapshot(run), snapshot(outside)
    for read in (load_run, RunView.from_run_dir):
        try:
            read(run)
        except UserError as exc:
            assert "\n" not in str(exc)
    rows = list_runs(run.parent)  # the home screen's list
    assert all(isinstance(r["status"], str) for r in rows)
    assert snapshot(run) == before and snapshot(outside) == before_outside


def test_markup_from_a_run_is_shown_as_text_in_the_app(pristine, tmp_path):
    import asyncio

    from ibtui.tui.run_screen import RunScreen
    from ibtui.tui.state import RunView
    from test_tui import OneScreenApp, status_text

    run, _ = crafted(pristine, tmp_path, "markup in meta")
    screen = RunScreen(RunView.from_run_dir(run))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("right")  # the app still answers keys
            assert screen.is_attached and screen.sub_title == "[bold red]boom[/] · tiny"  # the text itself (and the label), not markup
            assert status_text(screen).startswith("unknown")  # an unknown status is not trusted

    asyncio.run(scenario())


@pytest.mark.parametrize("setting, message", [
    ("schedule.points=1e12", "schedule.points"),
    ("estimators.binning.bin_size=1e-300", "bin_size"),
    ("model.noise_std=1e308", "noise_std"),
    ("train.seeds=1e9", "train.seeds"),
    ("train.seed=99999999999999999999999", "train.seed"),
    ("model.widths=" + "[" * 5000 + "]" * 5000, "nests too deeply"),
])
def test_absurd_overrides_are_one_line_errors(tmp_path, setting, message):
    result = CliRunner().invoke(app, ["run", "-p", "quick", "--set", "estimators.kde=false", "--set", setting,
                                      "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 2 and message in result.output, result.output[-500:]
    assert len(result.output.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_a_deeply_nested_preset_file_is_one_line(tmp_path):
    preset = tmp_path / "deep.toml"
    preset.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(app, ["presets", "show", str(preset)])
    assert result.exit_code == 2 and "nests too deeply" in result.output


def test_a_run_of_a_billion_epochs_builds_no_list_of_epochs(tmp_path):
    """The schedule is a rule: preparing a 10**10-epoch run is as cheap as a 10-epoch one."""
    from ibtui.config import load_preset
    from ibtui.engine.schedule import Schedule

    cfg = load_preset("saxe-tanh", ["train.epochs=1e10"])
    schedule = Schedule(cfg.schedule, cfg.train.epochs)
    assert schedule.decide(9_999_999_901, None)[0] == 10_000_000_000
