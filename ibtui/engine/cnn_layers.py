"""The CNN layer list (``model.layers``): its syntax, parsing and shapes, without torch (the
config validates presets with it). The network itself is ``ibtui.engine.cnn.ConvEnsemble``.

- ``conv:C:K`` or ``conv:C:K:P``: C output channels, K×K kernel, stride 1, P pixels of zero padding
  on each side (default 0, "valid"; ``conv:C:3:1`` keeps the size), then ``model.activation``;
- ``pool:K``: K×K max pooling with stride K (a remainder row/column is dropped), no activation;
- ``dense:W``: W fully connected units (the input flattened per sample first), then the activation.
  No ``conv`` or ``pool`` may follow a ``dense``. A softmax layer over the classes is always added last.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

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
