"""The ETA by schedule and the plain progress lines of a headless run on a non-terminal."""

from __future__ import annotations

import pytest

from ibtui.config import ScheduleConfig
from ibtui.engine.schedule import static_epochs
from ibtui.progress import Eta, PlainProgress, remaining_measurements


@pytest.mark.parametrize("schedule", [ScheduleConfig(kind="log", points=30), ScheduleConfig(kind="stepped"),
                                      ScheduleConfig(kind="every_n", every=7), ScheduleConfig(kind="every")])
def test_remaining_measurements_follow_the_schedules_rule(schedule):
    epochs = list(static_epochs(schedule, 1000))
    for after in (-1, 0, 3, 50, 499, 999, 1000):
        assert remaining_measurements(schedule, 1000, after) == len([e for e in epochs if e > after]), after


def events(schedule: ScheduleConfig, total: int, upto: int, train_s: float, measure_s: float) -> list[dict]:
    """A run's events through epoch ``upto``: each epoch trains ``train_s``; each measurement costs ``measure_s``."""
    measured = set(static_epochs(schedule, total))
    out: list[dict] = [{"type": "start", "meta": {"epochs_total": total}}, {"type": "measure", "epoch": 0}]
    last_measured = True
    for epoch in range(1, upto + 1):
        event = {"type": "epoch", "epoch": epoch, "epochs": total, "seconds": train_s}
        if last_measured:
            event["measure_seconds"] = measure_s
        out.append(event)
        last_measured = epoch in measured
        if last_measured:
            out.append({"type": "measure", "epoch": epoch})
    return out


def test_the_eta_adds_training_and_the_measurements_the_schedule_has_left():
    schedule = ScheduleConfig(kind="log", points=30)
    eta = Eta(1000, schedule)
    for event in events(schedule, 1000, 50, train_s=0.01, measure_s=0.2):
        eta.apply(event)
    left = len([e for e in static_epochs(schedule, 1000) if e > 50])
    assert eta.seconds() == pytest.approx(950 * 0.01 + left * 0.2)
    elapsed = 50 * 0.01 + len([e for e in static_epochs(schedule, 1000) if e <= 50]) * 0.2
    assert elapsed / 50 * 950 > 3 * eta.seconds()  # a linear extrapolation of epochs is far off early in a log schedule


def test_plain_progress_prints_one_line_per_interval_within_80_columns():
    clock = [0.0]
    lines: list[str] = []
    eta = Eta(300)
    progress = PlainProgress(lines.append, "a-very-long-run-label · relu · 300 epochs · lr=0.0001 · no kde · +ksg",
                             300, eta, every_s=10.0, clock=lambda: clock[0])
    progress.on_event({"type": "start"})
    for epoch in range(1, 301):
        clock[0] += 0.125
        event = {"type": "epoch", "epoch": epoch, "epochs": 300, "seconds": 0.125}
        eta.apply(event)
        progress.on_event(event)
    progress.on_event({"type": "end", "summary": {"epochs_done": 300}})
    assert len(lines) == 3 + 1  # at 10, 20 and 30 s, and the end
    assert all(len(line) <= 80 and "\r" not in line for line in lines)
    assert "epoch 300/300 (100%)" in lines[-1] and "epoch 80/300 (27%)" in lines[0] and "ETA 0:28" in lines[0]  # 220 epochs × 0.125 s


def test_a_run_followed_from_disk_has_an_eta_from_the_measurements_seen_arrive(tmp_path, monkeypatch):
    """Another process writes the run (its lock held, events.jsonl growing): the ETA is the training
    seconds per epoch (wall time between measurements, less the estimators' seconds) over the epochs
    left, plus the measurements left times the estimators' seconds."""
    import json
    import shutil
    from pathlib import Path

    from conftest import tiny_config
    from ibtui.engine.runner import execute
    from ibtui.rundir.store import acquire_lock, read_events
    import ibtui.tui.state as state

    done = Path(execute(tiny_config(tmp_path / "done", schedule={"kind": "every"}))["run_dir"])
    run = tmp_path / "followed"
    shutil.copytree(done, run)
    lines = (done / "events.jsonl").read_text().splitlines(keepends=True)
    epochs = [json.loads(line)["epoch"] for line in lines]
    first = epochs.index(5) + 1
    (run / "events.jsonl").write_text("".join(lines[:first]))
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    clock = [1000.0]
    monkeypatch.setattr(state.time, "monotonic", lambda: clock[0])
    writer = acquire_lock(run)
    try:
        view = state.RunView.from_run_dir(run)
        assert view.running and view.eta() is None  # nothing seen arrive yet
        with (run / "events.jsonl").open("a") as f:
            f.write("".join(lines[first:first + 2]))  # epochs 6 and 7, seen 10 s later
        clock[0] += 10.0
        assert view.follow() == 2
        records = {e["epoch"]: e for e in read_events(done)}
        estimators = records[6]["mi_seconds"] + records[7]["mi_seconds"]
        per_epoch = (10.0 - estimators) / 2
        expected = (12 - 7) * per_epoch + (12 - 7) * estimators / 2  # every epoch is measured: 8..12
        assert view.eta() == pytest.approx(expected, rel=1e-6)
    finally:
        writer.release()
