"""Shared helpers: tiny, fast run configurations."""

from __future__ import annotations

import threading
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

from ibtui.config import Config, config_from_dict
from ibtui.rundir.store import read_events, read_npz


def tiny_config(runs_dir, **sections) -> Config:
    """A 12-bit run of a few epochs with binning only, writing into ``runs_dir``."""
    raw = {
        "preset": "tiny",
        "description": "test run",
        "data": {"dataset": "12bit"},
        "model": {"widths": [10, 7, 5, 4, 3], "activation": "tanh"},
        "train": {"epochs": 12, "lr": 0.001, "batch_size": 256, "seed": 0, "device": "cpu"},
        "schedule": {"kind": "every_n", "every": 3},
        "store": {"runs_dir": str(runs_dir)},
        "estimators": {"binning": {"bin_size": 0.07}},
    }
    for name, values in sections.items():
        if name == "estimators":
            raw["estimators"] = values
        else:
            raw[name] = {**raw.get(name, {}), **values}
    return config_from_dict(raw)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@st.composite
def mi_samples(draw):
    """(layer (n, d) float64, x_ids (n,), y (n,)): small random MI sets for bound properties."""
    n = draw(st.integers(1, 30))
    d = draw(st.integers(1, 3))
    layer = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-3.0, 3.0)))
    x_ids = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n - 1)))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2)))
    return layer, x_ids, y


class StopAfter:
    """A stop flag that turns on after ``calls`` checks (the engine checks once per epoch)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.limit = 0, calls

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.limit


def full_and_resumed_events(runs_dir, stop_after: int, **sections):
    """Events of an uninterrupted run and of the same run stopped after ``stop_after`` checks, then resumed."""
    from ibtui.engine.runner import execute, resume
    from ibtui.rundir.store import read_events

    full = execute(tiny_config(runs_dir / "full", **sections))
    cut = execute(tiny_config(runs_dir / "cut", **sections), stop=StopAfter(stop_after))
    assert cut["status"] == "stopped"
    assert resume(cut["run_dir"])["status"] == "done"
    return read_events(full["run_dir"]), read_events(cut["run_dir"])


def by_epoch(run_dir):
    """Measured epochs → event without timing fields (the last line wins, as readers do)."""
    return {e["epoch"]: {k: v for k, v in e.items() if k != "mi_seconds"} for e in read_events(run_dir)}


def stop_at(epoch):
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "measure" and event["epoch"] >= epoch:
            stop.set()

    return stop, on_event


def assert_same_arrays(run, ref):
    """planes.npz and curves.npz of a resumed run equal the uninterrupted run's (CPU: bit for bit)."""
    for name in ("planes.npz", "curves.npz"):
        mine, theirs = read_npz(Path(run) / name), read_npz(Path(ref) / name)
        assert sorted(mine) == sorted(theirs), name
        for key in theirs:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}:{key}")
