"""Stopping a run that another process writes: `ibtui stop RUN` (and `s` on the app's run list)
leave a stop request in the run directory, which the writing process reads once per epoch; the run
ends `stopped` with every measured epoch kept, and resumes exactly. No pid is read or signalled."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from conftest import tiny_config
from test_signals import Ibtui, assert_resumes_to, only_run, reference, run_args  # noqa: F401 (fixture)
from ibtui.cli import app as cli
from ibtui.engine.runner import execute, resume
from ibtui.rundir.store import STOP_REQUEST, acquire_lock, read_meta, request_stop


def test_ibtui_stop_stops_a_run_another_process_writes_and_it_resumes_exactly(tmp_path, reference):
    ibtui = Ibtui(run_args(tmp_path / "runs"), pause="epoch:2")
    ibtui.wait_for("ibtui-test-pause: epoch")
    run = only_run(tmp_path / "runs")
    result = CliRunner().invoke(cli, ["stop", str(run), "--wait", "120"])
    assert result.exit_code == 0, result.output
    assert "stop requested" in result.output and "stopped" in result.output
    code, err = ibtui.finish()
    assert code == 130 and "Traceback" not in err
    assert read_meta(run)["status"] == "stopped"
    assert not (run / STOP_REQUEST).exists()  # answered, so a resume is not stopped by it
    assert_resumes_to(run, reference)


def test_ibtui_stop_refuses_a_run_that_is_not_running_in_one_line(tmp_path):
    run = Path(execute(tiny_config(tmp_path))["run_dir"])
    result = CliRunner().invoke(cli, ["stop", str(run)])
    assert result.exit_code == 2
    assert "not running (status done)" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (run / STOP_REQUEST).exists()


def test_ibtui_stop_refuses_a_directory_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(cli, ["stop", str(tmp_path)])
    assert result.exit_code == 2 and "not an ibtui run directory" in result.output


def test_a_stop_request_left_in_a_run_does_not_stop_its_resume(tmp_path):
    run = Path(execute(tiny_config(tmp_path, train={"epochs": 12}), stop=_StopAfter(4))["run_dir"])
    assert read_meta(run)["status"] == "stopped"
    (run / STOP_REQUEST).write_text("left over\n")
    assert resume(run)["status"] == "done"
    assert not (run / STOP_REQUEST).exists()


def test_a_run_stops_at_the_epoch_after_a_request_appears(tmp_path):
    class RequestAt:
        def __init__(self) -> None:
            self.calls = 0

        def is_set(self) -> bool:  # checked before epochs 0, 1, 2...: the request comes before epoch 4
            self.calls += 1
            if self.calls == 5:
                request_stop(next((tmp_path).iterdir()))
            return False

    summary = execute(tiny_config(tmp_path, train={"epochs": 12}), stop=RequestAt())
    assert summary["status"] == "stopped" and summary["epochs_done"] == 3  # epoch 4 is not begun


def test_a_stop_request_is_never_written_through_a_symlink(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    (run / STOP_REQUEST).symlink_to(outside)
    assert request_stop(run) is False  # the name exists: already requested, nothing written
    assert outside.read_text() == "mine\n"


def test_s_on_the_run_list_asks_a_run_another_process_writes_to_stop(tmp_path):
    from test_tui import home_app

    run = Path(execute(tiny_config(tmp_path))["run_dir"])
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    writer = acquire_lock(run)  # as the process writing the run holds it

    async def scenario():
        app, _ = home_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            app.screen.query_one("#runs").focus()
            await pilot.press("s")
            await pilot.pause(0.1)
            assert (run / STOP_REQUEST).exists()
            assert any("stop requested" in str(n.message) for n in app._notifications)

    try:
        asyncio.run(scenario())
    finally:
        writer.release()


class _StopAfter:
    """A stop flag set from the ``n``-th check on (the engine checks once per epoch)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.n
