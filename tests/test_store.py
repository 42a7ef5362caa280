"""The run directory contract: unique names, atomic arrays, readable after a torn write."""

import json

import numpy as np

from ibtui.rundir.store import RunStore, atomic_write_npz, read_events, read_meta, read_npz


def make_store(tmp_path, preset="p"):
    return RunStore.create(tmp_path, preset, 'preset = "p"\n', {"seed": 0})


def test_create_writes_config_meta_and_empty_events(tmp_path):
    store = make_store(tmp_path)
    assert (store.path / "config.toml").read_text() == 'preset = "p"\n'
    meta = read_meta(store.path)
    assert meta["status"] == "running" and meta["seed"] == 0 and meta["id"] == store.path.name
    assert read_events(store.path) == []
    assert store.path.name.startswith("p-")


def test_two_runs_created_in_the_same_second_never_collide(tmp_path):
    paths = {make_store(tmp_path).path for _ in range(5)}
    assert len(paths) == 5


def test_events_are_appended_one_json_line_each(tmp_path):
    store = make_store(tmp_path)
    store.append_event({"epoch": 0})
    store.append_event({"epoch": 1})
    lines = (store.path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


def test_readers_skip_a_torn_last_line(tmp_path):
    store = make_store(tmp_path)
    store.append_event({"epoch": 0})
    store.close()
    with open(store.path / "events.jsonl", "ab") as fh:
        fh.write(b'{"epoch": 1, "pla')
    assert read_events(store.path) == [{"epoch": 0}]


def test_readers_skip_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"epoch": 0}\n\x00\x01garbage\n[1,2]\n{"epoch": 2}\n')
    assert read_events(tmp_path) == [{"epoch": 0}, {"epoch": 2}]


def test_atomic_npz_round_trips_and_leaves_no_temp_file(tmp_path):
    atomic_write_npz(tmp_path / "a.npz", {"x": np.arange(3), "y.z": np.ones((2, 2))})
    data = read_npz(tmp_path / "a.npz")
    assert data["x"].tolist() == [0, 1, 2] and data["y.z"].shape == (2, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_meta_updates_are_merged(tmp_path):
    store = make_store(tmp_path)
    store.write_meta(status="done", epochs_done=3)
    meta = read_meta(store.path)
    assert meta["status"] == "done" and meta["epochs_done"] == 3 and meta["seed"] == 0
