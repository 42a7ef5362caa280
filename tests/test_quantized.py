"""Quantized networks: activations on 2^k levels, exact plug-in MI, float accuracy next to it."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from ibtui.config import load_preset
from ibtui.engine.data import load_dataset
from ibtui.engine.model import Ensemble, quantize
from ibtui.engine.runner import execute
from ibtui.rundir.store import checkpoint_path, read_events
from ibtui.errors import UserError

from conftest import tiny_config

QUANTIZED = {"quantize_bits": 3}


def entropy_bits(counts) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts)


def test_quantize_rounds_to_the_nearest_of_2_to_the_k_levels_and_clips():
    a = torch.tensor([-2.0, -1.0, -0.6, -0.1, 0.1, 0.4, 0.99, 3.0])
    q = quantize(a, 2, -1.0, 1.0)  # levels −1, −1/3, 1/3, 1
    expected = torch.tensor([-1.0, -1.0, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1.0, 1.0])
    torch.testing.assert_close(q, expected)


def test_quantize_passes_the_gradient_straight_through():
    a = torch.tensor([0.2, -0.7], requires_grad=True)
    quantize(a, 4, -1.0, 1.0).sum().backward()
    assert a.grad.tolist() == [1.0, 1.0]


def test_quantized_layers_take_at_most_2_to_the_k_values_per_unit():
    model = Ensemble(12, [10, 5], 2, "tanh", "idnns", [0], 3, (-1.0, 1.0))
    with torch.no_grad():
        layers = model.forward_layers(torch.randn(500, 12))
    for layer in layers[:-1]:
        assert torch.unique(layer).numel() <= 8


def test_quantized_run_mi_equals_exact_enumeration(runs_dir):
    """I(X;T) and I(T;Y) of the run against counting the distinct codes of all 4096 inputs by hand."""
    summary = execute(tiny_config(runs_dir, model=QUANTIZED, estimators={"discrete": {}}))
    weights = np.load(checkpoint_path(summary["run_dir"], 12), allow_pickle=False)
    model = Ensemble(12, [10, 7, 5, 4, 3], 2, "tanh", "idnns", [0], 3, (-1.0, 1.0))
    model.load_state_arrays({k: torch.as_tensor(weights[k]) for k in weights.files if not k.startswith("resume.")})
    data = load_dataset("12bit")
    with torch.no_grad():
        layers = [layer[0].numpy() for layer in model.forward_layers(torch.as_tensor(data.x))]
    plane = read_events(summary["run_dir"])[-1]["planes"]["discrete"]
    for index, layer in enumerate(layers[:-1]):
        rows = [tuple(np.round(row, 6)) for row in layer]
        h_t = entropy_bits(Counter(rows).values())
        h_t_given_y = sum(
            np.mean(data.y == c) * entropy_bits(Counter(r for r, y in zip(rows, data.y) if y == c).values())
            for c in (0, 1))
        assert plane["ixt"][index] == pytest.approx(h_t, abs=1e-9)  # distinct inputs: H(T|X) = 0
        assert plane["ity"][index] == pytest.approx(h_t - h_t_given_y, abs=1e-9)


def test_quantized_run_reports_float_accuracy_of_the_same_weights(runs_dir):
    summary = execute(tiny_config(runs_dir, model=QUANTIZED))
    events = read_events(summary["run_dir"])
    assert all(0.0 <= e["float_test_acc"] <= 1.0 for e in events)
    assert summary["float_test_acc"] == events[-1]["float_test_acc"]


def test_float_run_has_no_float_accuracy_field(runs_dir):
    summary = execute(tiny_config(runs_dir))
    assert "float_test_acc" not in summary and "float_test_acc" not in read_events(summary["run_dir"])[-1]


def test_quantizing_an_unbounded_activation_needs_a_range(runs_dir):
    with pytest.raises(UserError, match="quantize_range"):
        tiny_config(runs_dir, model={**QUANTIZED, "activation": "relu"})
    tiny_config(runs_dir, model={**QUANTIZED, "activation": "relu", "quantize_range": [0.0, 4.0]})


def test_quantized_8bit_preset_uses_the_exact_estimator():
    cfg = load_preset("quantized-8bit")
    assert cfg.model.quantize_bits == 8 and list(cfg.estimators) == ["discrete"]
