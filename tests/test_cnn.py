"""Convolutional networks (``model.kind = "cnn"``): the layer syntax, shapes and flattening, seed
ensembles, and a ``mnist-cnn`` run on small synthetic MNIST-format data end to end (train,
measure, resume exactly, replay)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_same_arrays, by_epoch, stop_at
from ibtui import load_run
from ibtui.config import config_from_dict, load_preset
from ibtui.engine.cnn import ConvEnsemble
from ibtui.engine.cnn_layers import layer_shapes, parse_layers
from ibtui.engine.data import load_dataset
from ibtui.engine.runner import execute, resume
from ibtui.errors import UserError
from ibtui.rundir.store import read_meta, read_npz

LENET = ["conv:6:5", "pool:2", "conv:16:5", "pool:2", "dense:120", "dense:84"]
SMALL = '["conv:3:5", "pool:2", "dense:12"]'


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture(scope="module")
def synthetic_mnist(tmp_path_factory) -> Path:
    """200 train + 100 test 28×28 images in MNIST's IDX format (gzipped), a class-dependent bar on noise."""
    folder = tmp_path_factory.mktemp("synthetic-mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 100)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for c in range(10):
            x[y == c, 2 * c + 2:2 * c + 5, 4:24] = 250
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x), mtime=0))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y), mtime=0))
    return folder


def cnn_config(runs_dir: Path, synthetic: Path, *extra: str):
    """The mnist-cnn preset on the synthetic data: a small net, 4 epochs, every epoch measured."""
    return load_preset("mnist-cnn", [f"data.dataset=idx:{synthetic}", f"model.layers={SMALL}", "train.epochs=4",
                                     "train.device=cpu", f"store.runs_dir={runs_dir}", *extra])


# ------------------------------------------------------------------ layers and shapes


def test_lenet_layer_names_are_kind_index_and_flattened_units():
    net = ConvEnsemble((1, 28, 28), parse_layers(LENET), 10)
    assert net.layer_names == ["conv1:3456", "pool1:864", "conv2:1024", "pool2:256", "dense1:120", "dense2:84",
                               "softmax:10"]
    assert net.widths == [3456, 864, 1024, 256, 120, 84, 10]


def test_every_layer_output_is_flattened_per_sample():
    net = ConvEnsemble((1, 28, 28), parse_layers(LENET), 10, seeds=[0, 1])
    outputs = net.forward_layers(torch.rand(5, 784))
    assert [tuple(o.shape) for o in outputs] == [(2, 5, w) for w in net.widths]
    assert torch.allclose(outputs[-1].sum(2), torch.ones(2, 5))  # softmax probabilities


def test_conv_and_pool_outputs_flatten_in_channel_height_width_order():
    net = ConvEnsemble((3, 8, 8), parse_layers(["conv:4:3:1", "pool:2", "dense:5"]), 3, activation="tanh")
    x = torch.rand(6, 3 * 8 * 8)
    conv1, pool1, dense1, _ = net.forward_layers(x)
    expected = torch.tanh(F.conv2d(x.view(6, 3, 8, 8), net.weights[0][0], net.biases[0][0], padding=1))
    torch.testing.assert_close(conv1[0], expected.flatten(1))
    torch.testing.assert_close(pool1[0], F.max_pool2d(expected, 2).flatten(1))
    torch.testing.assert_close(dense1[0], torch.tanh(pool1[0] @ net.weights[1][0].T + net.biases[1][0]))


def test_an_ensemble_member_is_the_network_its_seed_builds_alone():
    layers = parse_layers(["conv:3:3", "pool:2", "dense:7"])
    together = ConvEnsemble((1, 10, 10), layers, 4, seeds=[5, 6, 7])
    alone = ConvEnsemble((1, 10, 10), layers, 4, seeds=[6])
    x = torch.rand(9, 100)
    for both, single in zip(together.forward_layers(x), alone.forward_layers(x)):
        torch.testing.assert_close(both[1], single[0])
    torch.testing.assert_close(together.logits(x)[1], alone.logits(x)[0])


def test_logits_are_feature_major_as_the_mlp_ensemble():
    net = ConvEnsemble((1, 10, 10), parse_layers(["conv:2:3", "dense:4"]), 3, seeds=[0, 1])
    x = torch.rand(2, 7, 100)  # one batch per member
    logits = net.logits(x)
    assert logits.shape == (2, 3, 7)
    torch.testing.assert_close(net(x), logits.transpose(1, 2))


@pytest.mark.parametrize("spec, message", [
    ("conv:6", "is not a layer"), ("conv:0:5", "channels"), ("conv:6:5:5", "padding"), ("pool:1", "pool size"),
    ("dense:0", "units"), ("linear:10", "is not a layer"), ("dense:10:2", "is not a layer"),
])
def test_a_bad_layer_spec_is_one_line_naming_the_entry(spec, message):
    raw = {"model": {"kind": "cnn", "layers": ["conv:4:3", spec]}, "estimators": {"binning": {}}}
    with pytest.raises(UserError, match=message) as info:
        config_from_dict(raw)
    assert f"model.layers[1] = '{spec}'" in str(info.value) and "\n" not in str(info.value)


def test_a_pool_after_a_dense_layer_is_refused():
    with pytest.raises(UserError, match=r"model.layers\[1\].*cannot follow a dense"):
        parse_layers(["dense:10", "pool:2"])


def test_a_layer_that_leaves_nothing_of_its_input_is_refused_naming_it():
    with pytest.raises(UserError, match=r"model.layers\[2\] \(conv\) leaves nothing of its 2x2 input"):
        layer_shapes(parse_layers(["conv:4:5", "pool:2", "conv:4:5"]), (1, 8, 8))


def test_layers_on_an_mlp_are_refused():
    with pytest.raises(UserError, match='model.kind = "cnn"'):
        config_from_dict({"model": {"layers": ["dense:3"]}, "estimators": {"binning": {}}})


@pytest.mark.parametrize("setting", [{"model": {"noise_std": 0.1}}, {"model": {"quantize_bits": 4}},
                                     {"train": {"gradient_stats": True}}])
def test_mlp_only_options_are_refused_for_a_cnn(setting):
    raw = {"model": {"kind": "cnn", "layers": ["dense:3"]}, "estimators": {"binning": {}}}
    for section, values in setting.items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(UserError, match='not supported with model.kind = "cnn"'):
        config_from_dict(raw)


def test_an_input_shape_that_does_not_fit_the_data_is_a_user_error(tmp_path, synthetic_mnist):
    cfg = cnn_config(tmp_path, synthetic_mnist, "model.input_shape=[1, 14, 14]")
    with pytest.raises(UserError, match=r"model.input_shape \[1, 14, 14\] holds 196 values.*784 features"):
        execute(cfg)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_data_without_an_image_shape_needs_model_input_shape(tmp_path):
    np.savez(tmp_path / "flat.npz", X=np.random.default_rng(0).random((40, 16)), y=np.arange(40) % 2)
    raw = {"data": {"dataset": f"npz:{tmp_path / 'flat.npz'}"}, "model": {"kind": "cnn", "layers": ["conv:2:3"]},
           "train": {"epochs": 1, "device": "cpu"}, "store": {"runs_dir": str(tmp_path / "runs")},
           "estimators": {"binning": {}}}
    with pytest.raises(UserError, match="model.input_shape"):
        execute(config_from_dict(raw))
    raw["model"]["input_shape"] = [1, 4, 4]
    assert execute(config_from_dict(raw))["layers"] == ["conv1:8", "softmax:2"]


def test_idx_images_carry_their_shape(synthetic_mnist):
    assert load_dataset(f"idx:{synthetic_mnist}").shape == (1, 28, 28)


# ------------------------------------------------------------------ runs


def test_mnist_cnn_trains_and_measures_every_layer(tmp_path, synthetic_mnist):
    summary = execute(cnn_config(tmp_path, synthetic_mnist))
    assert summary["status"] == "done" and summary["layers"] == ["conv1:1728", "pool1:432", "dense1:12", "softmax:10"]
    planes = read_npz(Path(summary["run_dir"]) / "planes.npz")
    assert planes["epochs"].tolist() == [0, 1, 2, 3, 4]
    for name in ("renyi", "edge", "binning"):
        assert planes[f"{name}.ixt"].shape == (5, 4) and np.isfinite(planes[f"{name}.ixt"]).all()
    assert read_meta(summary["run_dir"])["n_train"] == 200


def test_a_resumed_mnist_cnn_run_ends_as_the_uninterrupted_run(tmp_path, synthetic_mnist):
    whole = execute(cnn_config(tmp_path / "whole", synthetic_mnist))
    stop, on_event = stop_at(2)
    cut = execute(cnn_config(tmp_path / "cut", synthetic_mnist), on_event=on_event, stop=stop)
    assert cut["status"] == "stopped" and cut["epochs_done"] < 4
    assert resume(cut["run_dir"])["status"] == "done"
    assert by_epoch(cut["run_dir"]) == by_epoch(whole["run_dir"])
    assert_same_arrays(cut["run_dir"], whole["run_dir"])


def test_a_mnist_cnn_run_replays_with_its_layers_and_weights(tmp_path, synthetic_mnist):
    from ibtui.tui.state import RunView

    summary = execute(cnn_config(tmp_path, synthetic_mnist, "train.epochs=1"))
    run = load_run(summary["run_dir"])
    assert run.layers == summary["layers"] and list(run.epochs) == [0, 1]
    net = run.model_at(1)
    saved = run.checkpoint(1)
    assert isinstance(net, ConvEnsemble) and set(net.state_arrays()) == {k for k in saved if not k.startswith("resume.")}
    np.testing.assert_array_equal(net.state_arrays()["weight.0"].numpy(), saved["weight.0"])
    view = RunView.from_run_dir(summary["run_dir"])
    assert view.layers == summary["layers"] and set(view.planes) == {"renyi", "edge", "binning"}


def test_a_cnn_seed_ensemble_records_each_member(tmp_path, synthetic_mnist):
    summary = execute(cnn_config(tmp_path, synthetic_mnist, "train.seeds=2", "train.epochs=1",
                                 "estimators.renyi=false", "estimators.edge=false"))
    planes = read_npz(Path(summary["run_dir"]) / "planes.npz")
    assert summary["seeds"] == [0, 1] and planes["binning.ixt_seeds"].shape == (2, 2, 4)


@pytest.mark.parametrize("preset, shape, names", [
    ("mnist-cnn", (1, 28, 28), ["conv1:3456", "pool1:864", "conv2:1024", "pool2:256", "dense1:120", "dense2:84",
                                "softmax:10"]),
    ("cifar10-cnn", (3, 32, 32), ["conv1:32768", "conv2:32768", "pool1:8192", "conv3:16384", "conv4:16384",
                                  "pool2:4096", "dense1:256", "softmax:10"]),
])
def test_the_cnn_presets_build_on_their_datasets_image_shapes(preset, shape, names):
    cfg = load_preset(preset)
    assert cfg.model.kind == "cnn" and cfg.data.mi_max_samples == 1000
    assert set(cfg.estimators) == {"renyi", "edge", "binning"}
    assert ConvEnsemble(shape, parse_layers(cfg.model.layers), 10).layer_names == names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_mnist_cnn_run_on_cuda_saves_its_checkpoints_as_host_arrays(tmp_path, synthetic_mnist):
    summary = execute(cnn_config(tmp_path, synthetic_mnist, "train.device=cuda", "train.epochs=1"))
    assert summary["status"] == "done" and summary["device"].startswith("cuda")
    saved = load_run(summary["run_dir"]).checkpoint(1)
    assert all(isinstance(v, np.ndarray) for v in saved.values()) and "resume.opt.0.exp_avg" in saved
    assert np.isfinite(read_npz(Path(summary["run_dir"]) / "planes.npz")["renyi.ixt"]).all()
