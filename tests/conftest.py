"""Shared helpers: tiny, fast run configurations."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

from ibtui.config import Config, config_from_dict


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
