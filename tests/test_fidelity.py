"""The reference codes' behaviour, pinned by implementations written in the tests from their
formulas (IDNNs: ravidziv/IDNNs; ibsgd: artemyk/ibsgd). docs/fidelity.md names every file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ibtui.config import load_preset
from ibtui.engine.model import Ensemble
from ibtui.engine.runner import execute
from ibtui.engine.training import eps_hat_as_torch_eps, make_optimizer
from ibtui.rundir.store import checkpoint_path, read_npz

WIDTHS = [10, 7, 5, 4, 3]
SIZES = [12, *WIDTHS, 2]


def truncated_normal(std: float):
    """tf.truncated_normal(stddev=std): N(0, std²) with draws beyond ±2 std redrawn."""
    return stats.truncnorm(-2.0, 2.0, scale=std)


def glorot_uniform(fan_in: int, fan_out: int):
    """Keras' glorot_uniform: U(−l, l), l = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return stats.uniform(-limit, 2 * limit)


def reference_init(init: str, layer: int):
    fan_in, fan_out = SIZES[layer], SIZES[layer + 1]
    last = layer == len(SIZES) - 2
    if init == "idnns":  # idnns/networks/model.py: stddev=1/sqrt(row_size), row_size = fan_in
        return truncated_normal(1 / math.sqrt(fan_in))
    if init == "ibsgd":  # IBnet_SaveActivations.ipynb: stddev=1/sqrt(n) for Dense(n); softmax Dense default
        return glorot_uniform(fan_in, fan_out) if last else truncated_normal(1 / math.sqrt(fan_out))
    return glorot_uniform(fan_in, fan_out)  # MNIST_SaveActivations.ipynb: Keras Dense defaults


@pytest.mark.parametrize("init", ["idnns", "ibsgd", "keras"])
def test_initial_weights_follow_the_reference_distribution_per_layer(init):
    model = Ensemble(12, WIDTHS, 2, "tanh", init, seeds=list(range(600)))
    for layer, (w, b) in enumerate(zip(model.weights, model.biases)):
        values = w.detach().double().numpy().ravel()
        expected = reference_init(init, layer)
        assert np.std(values) == pytest.approx(expected.std(), rel=0.05), f"layer {layer}"
        assert stats.kstest(values, expected.cdf).pvalue > 1e-4, f"layer {layer}"
        assert not b.detach().any()


def test_fan_in_and_fan_out_scales_are_told_apart():
    fan_in = Ensemble(12, WIDTHS, 2, "tanh", "idnns", seeds=list(range(300))).weights[2].detach().numpy()
    fan_out = Ensemble(12, WIDTHS, 2, "tanh", "ibsgd", seeds=list(range(300))).weights[2].detach().numpy()
    # layer 7 → 5: std 1/sqrt(7) × 0.88 against 1/sqrt(5) × 0.88
    assert fan_out.std() / fan_in.std() == pytest.approx(math.sqrt(7 / 5), rel=0.05)


def tf_adam(params, grads_per_step, lr, eps, beta1=0.9, beta2=0.999):
    """TensorFlow's/Keras' Adam (tf.train.AdamOptimizer, keras optimizers.Adam), as they write it:
    lr_t = lr·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ); m, v updated; p −= lr_t·m/(sqrt(v) + ε)."""
    p = params.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads_per_step, start=1):
        lr_t = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr_t * m / (np.sqrt(v) + eps)
    return p


def test_adam_with_epsilon_hat_is_tensorflow_adam():
    rng = np.random.default_rng(0)
    start = rng.normal(size=50)
    grads = [rng.normal(scale=10.0 ** rng.integers(-9, 0), size=50) for _ in range(30)]  # tiny ones too
    param = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = make_optimizer(torch.nn.ParameterList([param]), "adam", 0.01, adam_eps=1e-7)
    for t, g in enumerate(grads, start=1):
        param.grad = torch.tensor(g)
        opt.param_groups[0]["eps"] = eps_hat_as_torch_eps(1e-7, 0.999, t)
        opt.step()
    expected = tf_adam(start, grads, 0.01, 1e-7)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-10, atol=1e-13)
    # and plain PyTorch Adam is measurably not TF's on these tiny gradients
    plain = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = make_optimizer(torch.nn.ParameterList([plain]), "adam", 0.01, adam_eps=1e-7)
    for g in grads:
        plain.grad = torch.tensor(g)
        opt.step()
    assert np.abs(plain.detach().numpy() - expected).max() > 1e-6


def idnns_training(weights, biases, x_train, y_train, epochs, batch_size, lr, eps):
    """IDNNs' train_network, written here: the same consecutive minibatches of the unshuffled
    training split every epoch (batch_points), mean cross-entropy of the softmax, TF Adam."""
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for pair in zip(weights, biases) for a in pair]
    state = [(np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    n = len(x_train)
    points = list(range(0, n + 1, batch_size)) + ([n] if n % batch_size else [])
    t = 0
    for _ in range(epochs):
        for lo, hi in zip(points[:-1], points[1:]):
            h = torch.tensor(x_train[lo:hi], dtype=torch.float64)
            for i in range(0, len(params) - 2, 2):
                h = torch.tanh(h @ params[i].T + params[i + 1])
            logits = h @ params[-2].T + params[-1]
            loss = -torch.log_softmax(logits, 1)[torch.arange(hi - lo), torch.tensor(y_train[lo:hi])].mean()
            grads = torch.autograd.grad(loss, params)
            t += 1
            with torch.no_grad():
                for p, g, (m, v) in zip(params, grads, state):
                    g = g.numpy()
                    m *= 0.9
                    m += 0.1 * g
                    v *= 0.999
                    v += 0.001 * g * g
                    lr_t = lr * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
                    p -= torch.tensor(lr_t * m / (np.sqrt(v) + eps))
    return [p.detach().numpy() for p in params]


def test_tishby_tanh_trains_as_idnns_fixed_batches_and_tensorflow_adam(runs_dir):
    cfg = load_preset("tishby-tanh", ["train.epochs=2", 'schedule.kind="every"', 'train.device="cpu"',
                                      f'store.runs_dir="{runs_dir}"', "train.gradient_stats=false"])
    summary = execute(cfg)
    path = summary["run_dir"]
    start, end = read_npz(checkpoint_path(path, 0)), read_npz(checkpoint_path(path, 2))
    from ibtui.engine.data import make_twelve_bit

    data = make_twelve_bit()
    n_train = int(np.rint(80 * 4096 / 100))  # data_shuffle: perc(80, 4096), no shuffle
    layers = len(WIDTHS) + 1
    weights = [start[f"weight.{i}"][0] for i in range(layers)]
    biases = [start[f"bias.{i}"][0, 0] for i in range(layers)]
    expected = idnns_training(weights, biases, data.x[:n_train], data.y[:n_train], 2, 512, 4e-4, 1e-8)
    for i in range(layers):
        np.testing.assert_allclose(end[f"weight.{i}"][0], expected[2 * i], rtol=1e-4, atol=2e-6)
        np.testing.assert_allclose(end[f"bias.{i}"][0, 0], expected[2 * i + 1], rtol=1e-4, atol=2e-6)


# The reference values of docs/fidelity.md, as the reference files set them (file in the comment).
IBSGD_IBNET = {  # IBnet_SaveActivations.ipynb, IBnet_ComputeMI.ipynb, utils.py
    "model.widths": [10, 7, 5, 4, 3], "model.init": "ibsgd", "train.optimizer": "adam", "train.lr": 0.0004,
    "train.adam_eps": 1e-7, "train.adam_eps_hat": True, "train.batch_size": 256, "train.shuffle_batches": True,
    "train.epochs": 10000, "data.train_fraction": 0.8, "data.shuffle": True, "data.mi_set": "all",
    "schedule.kind": "stepped", "estimators.binning.bin_size": 0.07, "estimators.kde.noise_variance": 1e-3,
}
IBSGD_MNIST = {  # MNIST_SaveActivations.ipynb, MNIST_ComputeMI.ipynb, loggingreporter.py
    "data.dataset": "mnist", "model.widths": [1024, 20, 20, 20], "model.init": "keras", "train.optimizer": "sgd",
    "train.lr": 0.001, "train.momentum": 0.0, "train.batch_size": 128, "train.shuffle_batches": True,
    "train.epochs": 10000, "data.mi_set": "test", "schedule.kind": "stepped_mnist",
    "estimators.binning.bin_size": 0.5, "estimators.kde.noise_variance": 0.1,
}
IDNNS = {  # idnns/networks/network_paramters.py, information_network.py, network.py, model.py, utils.py
    "model.widths": [10, 7, 5, 4, 3], "model.activation": "tanh", "model.init": "idnns", "train.optimizer": "adam",
    "train.lr": 0.0004, "train.adam_eps": 1e-8, "train.adam_eps_hat": True, "train.batch_size": 512,
    "train.shuffle_batches": False, "train.epochs": 8000, "data.train_fraction": 0.8, "data.shuffle": False,
    "data.mi_set": "all", "schedule.kind": "log", "schedule.points": 400, "estimators.binning_fixed.bins": 30,
    "estimators.binning_fixed.low": -1.0, "estimators.binning_fixed.high": 1.0,
}


def setting(cfg, key):
    section, *rest = key.split(".")
    if section == "estimators":
        return getattr(cfg.estimators[rest[0]], rest[1])
    return getattr(getattr(cfg, section), rest[0])


@pytest.mark.parametrize("preset, reference, activation", [
    ("tishby-tanh", IDNNS, "tanh"), ("saxe-tanh", IBSGD_IBNET, "tanh"), ("saxe-relu", IBSGD_IBNET, "relu"),
    ("mnist-tanh", IBSGD_MNIST, "tanh"), ("mnist-relu", IBSGD_MNIST, "relu")])
def test_reference_presets_carry_every_reference_setting(preset, reference, activation):
    cfg = load_preset(preset)
    assert cfg.model.activation == activation
    for key, value in reference.items():
        assert setting(cfg, key) == value, f"{preset}: {key}"


@pytest.mark.parametrize("preset", ["quantized-8bit", "noisy-tanh", "as-if-random"])
def test_presets_built_on_saxe_tanh_train_as_ibsgd(preset):
    cfg = load_preset(preset)
    for key in ("model.init", "train.optimizer", "train.lr", "train.adam_eps", "train.adam_eps_hat",
                "train.batch_size", "train.shuffle_batches", "data.shuffle", "schedule.kind"):
        assert setting(cfg, key) == IBSGD_IBNET[key], f"{preset}: {key}"
