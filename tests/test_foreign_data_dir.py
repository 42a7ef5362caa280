"""A run directory from someone else never makes us create or write anything outside it: its
config.toml's ``data_dir`` is only read (missing dataset files go to the user's own cache)."""

from __future__ import annotations

import threading

import pytest

from conftest import tiny_config
from ibtui.engine.analyze import analyze
from ibtui.engine.runner import execute, resume
from ibtui.errors import UserError


@pytest.fixture
def crafted_run(tmp_path, monkeypatch):
    """A stopped run whose config.toml asks for MNIST in ``tmp_path/outside/deep`` (no network:
    the mirror is a missing local path; the cache is ``tmp_path/cache``)."""
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "measure" and event["epoch"] >= 3:
            stop.set()

    run = execute(tiny_config(tmp_path / "runs", train={"epochs": 6}), on_event=on_event, stop=stop)["run_dir"]
    config = tmp_path / "runs" / run / "config.toml"
    outside = tmp_path / "outside" / "deep"
    text = config.read_text().replace('dataset = "12bit"', 'dataset = "mnist"')
    config.write_text(text.replace('data_dir = ""', f'data_dir = "{outside}"'))
    monkeypatch.setenv("IBTUI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IBTUI_MNIST_MIRROR", (tmp_path / "no-mirror").as_uri())
    return run


@pytest.mark.parametrize("command", ["resume", "analyze"])
def test_a_crafted_data_dir_never_creates_a_directory_outside_the_run(tmp_path, crafted_run, command):
    with pytest.raises(UserError):
        resume(crafted_run) if command == "resume" else analyze(crafted_run, "binning", None)
    assert not (tmp_path / "outside").exists()
