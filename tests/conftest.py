"""Shared helpers: tiny, fast run configurations."""

from __future__ import annotations

import pytest

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
