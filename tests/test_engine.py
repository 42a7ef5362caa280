"""The headless engine end to end on small 12-bit runs."""

import threading

import numpy as np
import pytest
import torch

from conftest import tiny_config
from ibtui.engine.model import Ensemble
from ibtui.engine.runner import execute
from ibtui.rundir.store import checkpoint_path, read_events, read_meta, read_npz
from ibtui.errors import UserError
from ibtui.estimators import Binning, MISet
from ibtui.engine.data import load_dataset


def only_run(runs_dir):
    (path,) = list(runs_dir.iterdir())
    return path


def test_run_writes_a_complete_run_directory(runs_dir):
    summary = execute(tiny_config(runs_dir))
    path = only_run(runs_dir)
    assert summary["status"] == "done" and summary["run_dir"] == str(path)
    meta = read_meta(path)
    assert meta["status"] == "done" and meta["epochs_done"] == 12 and meta["error"] is None
    events = read_events(path)
    assert [e["epoch"] for e in events] == [0, 3, 6, 9, 12]
    assert all(len(e["planes"]["binning"]["ixt"]) == 6 for e in events)
    planes = read_npz(path / "planes.npz")
    assert planes["epochs"].tolist() == [0, 3, 6, 9, 12]
    assert planes["binning.ixt"].shape == (5, 6)
    curves = read_npz(path / "curves.npz")
    assert curves["epoch"].tolist() == list(range(1, 13))
    assert (path / "config.toml").is_file() and (path / "worker.log").is_file()
    assert all(checkpoint_path(path, e).is_file() for e in (0, 3, 6, 9, 12))


def test_mi_values_are_bounded_by_the_plug_in_entropies(runs_dir):
    execute(tiny_config(runs_dir, estimators={"binning": {}, "binning_fixed": {}}))
    path = only_run(runs_dir)
    meta = read_meta(path)
    assert meta["h_x"] == pytest.approx(12.0) and meta["h_y"] == pytest.approx(1.0, abs=0.01)
    for event in read_events(path):
        for plane in event["planes"].values():
            assert all(0.0 <= v <= meta["h_x"] + 1e-9 for v in plane["ixt"])
            assert all(0.0 <= v <= meta["h_y"] + 1e-9 for v in plane["ity"])


def test_same_seed_gives_identical_measurements(runs_dir, tmp_path):
    a = execute(tiny_config(runs_dir))
    b = execute(tiny_config(tmp_path / "other"))
    strip = lambda events: [{k: v for k, v in e.items() if k != "mi_seconds"} for e in events]
    assert strip(read_events(a["run_dir"])) == strip(read_events(b["run_dir"]))


def test_different_seeds_give_different_measurements(runs_dir):
    a = execute(tiny_config(runs_dir, train={"seed": 1}))
    b = execute(tiny_config(runs_dir, train={"seed": 2}))
    assert read_events(a["run_dir"])[-1]["planes"] != read_events(b["run_dir"])[-1]["planes"]


def test_checkpoint_reproduces_the_measured_plane(runs_dir):
    summary = execute(tiny_config(runs_dir))
    path = only_run(runs_dir)
    weights = np.load(checkpoint_path(path, 12), allow_pickle=False)
    model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh")
    model.load_state_arrays({k: torch.as_tensor(weights[k]) for k in weights.files if not k.startswith("resume.")})
    data = load_dataset("12bit")
    with torch.no_grad():
        layers = [layer[0] for layer in model.forward_layers(torch.as_tensor(data.x))]
    ixt, ity = Binning(0.07).estimate(layers, MISet.from_arrays(data.x, data.y))["binning"]
    last = read_events(path)[-1]["planes"]["binning"]
    assert np.allclose(ixt, last["ixt"]) and np.allclose(ity, last["ity"])
    assert summary["planes"]["binning"][0]["final_ixt"] == pytest.approx(last["ixt"][0])


def test_untrained_tanh_network_matches_the_idnns_sanity_figures(runs_dir):
    cfg = tiny_config(runs_dir, train={"epochs": 0}, estimators={"binning_fixed": {"bins": 30}})
    execute(cfg)
    ixt = read_events(only_run(runs_dir))[0]["planes"]["binning_fixed"]["ixt"]
    assert ixt[0] > 11.5 and ixt[1] > 11.0  # wide early layers keep the 12 input bits
    assert ixt[-1] < 2.0  # the 2-unit softmax keeps little
    assert ixt[-2] < ixt[1]  # the 3-unit layer has lost information


def test_stop_flag_ends_the_run_as_stopped_keeping_measured_epochs(runs_dir):
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "measure" and event["epoch"] >= 3:
            stop.set()

    summary = execute(tiny_config(runs_dir, train={"epochs": 1000}), on_event=on_event, stop=stop)
    path = only_run(runs_dir)
    assert summary["status"] == "stopped" and read_meta(path)["status"] == "stopped"
    assert [e["epoch"] for e in read_events(path)] == [0, 3]
    assert read_npz(path / "planes.npz")["epochs"].tolist() == [0, 3]


def test_keyboard_interrupt_ends_the_run_as_stopped(runs_dir):
    def on_event(event):
        if event["type"] == "epoch" and event["epoch"] == 5:
            raise KeyboardInterrupt

    summary = execute(tiny_config(runs_dir, train={"epochs": 1000}), on_event=on_event)
    assert summary["status"] == "stopped"
    assert [e["epoch"] for e in read_events(only_run(runs_dir))] == [0, 3]


def test_divergence_fails_the_run_with_a_reason(runs_dir):
    cfg = tiny_config(runs_dir, model={"activation": "linear"}, train={"optimizer": "sgd", "lr": 1e30})
    summary = execute(cfg)
    meta = read_meta(only_run(runs_dir))
    assert summary["status"] == "failed" and meta["status"] == "failed"
    assert meta["error"].startswith("diverged") and ("nan" in meta["error"].lower() or "inf" in meta["error"].lower())


def test_every_schedule_decision_is_in_the_events(runs_dir):
    execute(tiny_config(runs_dir, schedule={"kind": "delta_approx", "delta": 0.05, "initial_skip": 2}, train={"epochs": 30}))
    events = read_events(only_run(runs_dir))
    assert all(e["schedule"]["decision"] in ("start", "double", "keep", "end") for e in events)
    epochs = [e["epoch"] for e in events]
    for event, nxt in zip(events, epochs[1:]):
        assert event["schedule"]["next"] == nxt


def test_delta_exact_bisects_from_kept_weights(runs_dir):
    cfg = tiny_config(runs_dir, schedule={"kind": "delta_exact", "delta": 0.02, "initial_skip": 8, "max_skip": 8},
                      train={"epochs": 16, "lr": 0.01})
    execute(cfg)
    path = only_run(runs_dir)
    events = read_events(path)
    bisected = [e for e in events if e["schedule"]["decision"] == "bisect"]
    assert bisected, "a fast-moving early run must trigger bisection"
    for e in bisected:
        lo, hi = e["schedule"]["between"]
        assert lo < e["epoch"] < hi
        assert checkpoint_path(path, e["epoch"]).is_file()
    assert sorted(read_npz(path / "planes.npz")["epochs"].tolist()) == sorted({e["epoch"] for e in events})


def test_bisected_measurement_equals_a_direct_measurement(runs_dir, tmp_path):
    cfg = tiny_config(runs_dir, schedule={"kind": "delta_exact", "delta": 0.02, "initial_skip": 8, "max_skip": 8},
                      train={"epochs": 8, "lr": 0.01})
    execute(cfg)
    bisected = {e["epoch"]: e for e in read_events(only_run(runs_dir)) if e["schedule"]["decision"] == "bisect"}
    direct = execute(tiny_config(tmp_path / "direct", schedule={"kind": "every"}, train={"epochs": 8, "lr": 0.01}))
    for event in read_events(direct["run_dir"]):
        if event["epoch"] in bisected:
            assert event["planes"] == bisected[event["epoch"]]["planes"]


def test_cuda_asked_for_without_cuda_is_a_user_error_and_writes_nothing(runs_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA is not available"):
        execute(tiny_config(runs_dir, train={"device": "cuda"}))
    assert not runs_dir.exists()


def test_unreadable_dataset_is_a_user_error_and_writes_nothing(runs_dir, tmp_path):
    with pytest.raises(UserError):
        execute(tiny_config(runs_dir, data={"dataset": f"mat:{tmp_path / 'missing.mat'}"}))
    assert not runs_dir.exists()


def test_mi_set_can_be_the_test_split_and_capped(runs_dir):
    execute(tiny_config(runs_dir, data={"mi_set": "train", "mi_max_samples": 500}, train={"epochs": 0}))
    meta = read_meta(only_run(runs_dir))
    assert meta["n_mi"] == 500 and meta["n_train"] == 3277 and meta["n_test"] == 819
