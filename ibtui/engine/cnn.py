"""Convolutional networks (``model.kind = "cnn"``): a layer list, parsed and checked here, and
``ConvEnsemble``, S such networks trained together like the MLP ``Ensemble``.

Layer syntax (``model.layers``, in order; a softmax layer over the classes is always added last):

- ``conv:C:K`` or ``conv:C:K:P``: C output channels, K×K kernel, stride 1, P pixels of zero padding
  on each side (default 0, "valid"; ``conv:C:3:1`` keeps the size), then ``model.activation``;
- ``pool:K``: K×K max pooling with stride K (a remainder row/column is dropped), no activation;
- ``dense:W``: W fully connected units (the input flattened per sample first), then the activation.
  No ``conv`` or ``pool`` may follow a ``dense``.

Inputs come flattened, (N, C·H·W) in C, H, W order (``Dataset.shape``); the network reshapes them.
Every layer's output (after its activation) is a measured layer T, flattened per sample in C, H, W
order, named ``conv1:3456``, ``pool1:864``, ``dense1:120`` ... (kind, index among its kind, units),
then ``softmax:C``, as the MLP's ``h1:10`` ... ``softmax:2``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ibtui.engine.model import ACTIVATION_FNS, StackedNetwork, draw_weights
from ibtui.errors import UserError

MAX_CHANNELS = 4096
MAX_KERNEL = 64
MAX_UNITS = 65536

_PATTERNS = {
    "conv": re.compile(r"conv:(\d+):(\d+)(?::(\d+))?"),
    "pool": re.compile(r"pool:(\d+)"),
    "dense": re.compile(r"dense:(\d+)"),
}
SYNTAX = "conv:CHANNELS:KERNEL[:PADDING], pool:SIZE or dense:UNITS"


@dataclass(frozen=True)
class Layer:
    """One parsed layer: ``kind`` conv|pool|dense; ``size`` channels, pool size or units;
    ``kernel`` and ``padding`` for conv (0 otherwise)."""

    kind: str
    size: int
    kernel: int = 0
    padding: int = 0


def parse_layers(specs: list[str], where: str = "model.layers") -> list[Layer]:
    """``model.layers`` → ``Layer``s; UserError (one line, naming the entry) for a bad spec."""
    if not specs:
        raise UserError(f'{where} is empty; model.kind = "cnn" needs layers such as ["conv:6:5", "pool:2", "dense:120"]')
    layers: list[Layer] = []
    for i, text in enumerate(specs):
        here = f"{where}[{i}] = {text!r}"
        spec = text.strip().lower() if isinstance(text, str) else ""
        kind = spec.partition(":")[0]
        match = _PATTERNS[kind].fullmatch(spec) if kind in _PATTERNS else None
        if match is None:
            raise UserError(f"{here} is not a layer; write {SYNTAX}")
        numbers = [int(g) if g is not None else 0 for g in match.groups()]
        if kind == "conv":
            channels, kernel, padding = numbers
            _limit(1 <= channels <= MAX_CHANNELS, f"{here}: channels must be from 1 to {MAX_CHANNELS}")
            _limit(1 <= kernel <= MAX_KERNEL, f"{here}: kernel must be from 1 to {MAX_KERNEL}")
            _limit(padding < kernel, f"{here}: padding must be smaller than the kernel")
            layer = Layer("conv", channels, kernel, padding)
        elif kind == "pool":
            _limit(2 <= numbers[0] <= MAX_KERNEL, f"{here}: pool size must be from 2 to {MAX_KERNEL}")
            layer = Layer("pool", numbers[0])
        else:
            _limit(1 <= numbers[0] <= MAX_UNITS, f"{here}: units must be from 1 to {MAX_UNITS}")
            layer = Layer("dense", numbers[0])
        if kind != "dense" and layers and layers[-1].kind == "dense":
            raise UserError(f"{here}: a {kind} layer cannot follow a dense layer (its output has no image shape)")
        layers.append(layer)
    return layers


def _limit(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def check_input_shape(shape: list[int] | tuple[int, ...], where: str = "model.input_shape") -> tuple[int, int, int]:
    """[C, H, W] with positive entries, as a tuple; UserError otherwise."""
    if len(shape) != 3 or not all(isinstance(v, int) and 1 <= v <= MAX_UNITS for v in shape):
        raise UserError(f"{where} must be [CHANNELS, HEIGHT, WIDTH] of positive integers; got {list(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def layer_shapes(layers: list[Layer], input_shape: tuple[int, int, int],
                 where: str = "model.layers") -> list[tuple[int, ...]]:
    """Each layer's output shape per sample ((C, H, W) or (units,)); UserError when an image
    shrinks to nothing or a flattened layer gets larger than ``MAX_UNITS`` × 64 units."""
    shape: tuple[int, ...] = tuple(input_shape)
    out = []
    for i, layer in enumerate(layers):
        if layer.kind == "dense":
            shape = (layer.size,)
        else:
            c, h, w = shape
            if layer.kind == "conv":
                h, w, c = h + 2 * layer.padding - layer.kernel + 1, w + 2 * layer.padding - layer.kernel + 1, layer.size
            else:
                h, w = h // layer.size, w // layer.size
            if h < 1 or w < 1:
                raise UserError(f"{where}[{i}] ({layer.kind}) leaves nothing of its {shape[1]}x{shape[2]} input "
                                f"(input shape {'x'.join(map(str, input_shape))})")
            shape = (c, h, w)
        units = math.prod(shape)
        _limit(units <= MAX_UNITS * 64, f"{where}[{i}] outputs {units} units per sample; at most {MAX_UNITS * 64}")
        out.append(shape)
    return out


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

