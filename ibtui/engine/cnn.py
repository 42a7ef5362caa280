"""Convolutional networks (``model.kind = "cnn"``): ``ConvEnsemble``, S networks of one layer list
trained together like the MLP ``Ensemble``.

Layer syntax (``model.layers``): ``ibtui.engine.cnn_layers`` (conv:C:K[:P], pool:K, dense:W).

Inputs come flattened, (N, C·H·W) in C, H, W order (``Dataset.shape``); the network reshapes them.
Every layer's output (after its activation) is a measured layer T, flattened per sample in C, H, W
order, named ``conv1:3456``, ``pool1:864``, ``dense1:120`` ... (kind, index among its kind, units),
then ``softmax:C``, as the MLP's ``h1:10`` ... ``softmax:2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ibtui.engine.cnn_layers import Layer, layer_shapes
from ibtui.engine.model import ACTIVATION_FNS, StackedNetwork, draw_weights

class ConvEnsemble(StackedNetwork):
    """S convolutional networks of the same shape trained together (``model.kind = "cnn"``).

    Member s is built after ``torch.manual_seed(seeds[s])`` (its own initial weights, drawn by
    ``draw_weights``). Weights are stacked per layer: conv ``weight.l`` (S, C_out, C_in, K, K),
    dense (S, out, in), biases (S, out). The S members run as one grouped convolution (groups = S)
    and one batched matrix product per dense layer. Deterministic (no noise, no quantization).
    """

    noisy = False
    noise_std = 0.0
    quantize_bits = 0
    quantized = False

    def __init__(self, input_shape: tuple[int, int, int], layers: list[Layer], n_classes: int,
                 activation: str = "relu", init: str = "torch", seeds: list[int] | tuple[int, ...] = (0,)) -> None:
        super().__init__()
        if not seeds:
            raise ValueError("an ensemble needs at least one seed")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.layers = list(layers)
        shapes = layer_shapes(self.layers, self.input_shape)
        members = [self._member(shapes, n_classes, init, seed) for seed in seeds]
        self.seeds = [int(s) for s in seeds]
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([m[i].weight.detach() for m in members]).contiguous())
                                        for i in range(len(members[0])))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([m[i].bias.detach() for m in members]).contiguous())
                                       for i in range(len(members[0])))
        self.activation = activation
        self._act = ACTIVATION_FNS[activation]
        counts: dict[str, int] = {}
        self.layer_names = []
        for layer, shape in zip(self.layers, shapes):
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            self.layer_names.append(f"{layer.kind}{counts[layer.kind]}:{math.prod(shape)}")
        self.layer_names.append(f"softmax:{n_classes}")

    def _member(self, shapes: list[tuple[int, ...]], n_classes: int, init: str, seed: int) -> list[nn.Module]:
        """One network's parameterised layers (conv and dense, then the softmax layer), seeded."""
        torch.manual_seed(seed)
        modules: list[nn.Module] = []
        previous: tuple[int, ...] = self.input_shape
        for layer, shape in zip(self.layers, shapes):
            if layer.kind == "conv":
                modules.append(nn.Conv2d(previous[0], layer.size, layer.kernel, padding=layer.padding))
            elif layer.kind == "dense":
                modules.append(nn.Linear(math.prod(previous), layer.size))
            previous = shape
        modules.append(nn.Linear(math.prod(previous), n_classes))
        for index, module in enumerate(modules):
            draw_weights(module.weight, module.bias, init, last=index == len(modules) - 1)
        return modules

    def _run(self, x: torch.Tensor, members: slice = slice(None),
             keep: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(each layer's output (S', B, units) when ``keep``, logits (S', B, n_classes)) of the
        selected members; x is (B, D) shared or (S', B, D)."""
        weights = [w[members] for w in self.weights]
        biases = [b[members] for b in self.biases]
        size = weights[0].shape[0]
        x = x.expand(size, *x.shape) if x.ndim == 2 else x
        batch = x.shape[1]
        h = x.reshape(size, batch, *self.input_shape).transpose(0, 1).reshape(batch, -1, *self.input_shape[1:])
        spatial, outputs, p = True, [], 0  # h is (B, S'·C, H, W) while spatial, else (S', B, units)
        for layer in self.layers:
            if layer.kind == "conv":
                w = weights[p]
                h = self._act(F.conv2d(h, w.reshape(-1, *w.shape[2:]), biases[p].reshape(-1),
                                       padding=layer.padding, groups=size))
                p += 1
            elif layer.kind == "pool":
                h = F.max_pool2d(h, layer.size)
            else:
                if spatial:
                    h, spatial = h.reshape(batch, size, -1).transpose(0, 1), False
                h = self._act(torch.baddbmm(biases[p][:, None, :], h, weights[p].transpose(1, 2)))
                p += 1
            if keep:
                outputs.append(h.reshape(batch, size, -1).transpose(0, 1).contiguous() if spatial else h)
        if spatial:
            h = h.reshape(batch, size, -1).transpose(0, 1)
        return outputs, torch.baddbmm(biases[p][:, None, :], h, weights[p].transpose(1, 2))

    def logits(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits, feature-major (S, n_classes, B) as ``Ensemble.logits`` (``generator``: unused, no noise)."""
        return self._run(x, keep=False)[1].transpose(1, 2)

    def forward_layers(self, x: torch.Tensor, members: slice = slice(None), centres: bool = False,
                       generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Every layer's output, then the softmax output: (S', B, units) each, flattened per sample."""
        outputs, logits = self._run(x, members)
        return [*outputs, torch.softmax(logits, dim=2)]

