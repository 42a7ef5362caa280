"""The network: an MLP with any hidden widths and activation, softmax output.

``forward_layers`` returns the activations of every hidden layer and the softmax
output, the "layers" T of the information plane (as in IDNNs and ibsgd).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATION_FNS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda a: a,
    "sigmoid": torch.sigmoid,
    "softplus": nn.functional.softplus,
    "elu": nn.functional.elu,
}


class MLP(nn.Module):
    """Input (D) → hidden widths with ``activation`` → linear to ``n_classes`` logits."""

    def __init__(self, n_inputs: int, widths: list[int], n_classes: int, activation: str = "tanh",
                 init: str = "idnns") -> None:
        super().__init__()
        sizes = [n_inputs, *widths, n_classes]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation
        self._act = ACTIVATION_FNS[activation]
        if init == "idnns":
            self.reset_idnns()

    @torch.no_grad()
    def reset_idnns(self) -> None:
        """IDNNs/ibsgd init: weights ~ truncated normal(0, 1/sqrt(fan_in)) cut at ±2 std, biases 0."""
        for lin in self.linears:
            std = 1.0 / math.sqrt(lin.in_features)
            nn.init.trunc_normal_(lin.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes)."""
        for lin in self.linears[:-1]:
            x = self._act(lin(x))
        return self.linears[-1](x)

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of each hidden layer, then the softmax output probabilities."""
        outs = []
        for lin in self.linears[:-1]:
            x = self._act(lin(x))
            outs.append(x)
        outs.append(torch.softmax(self.linears[-1](x), dim=1))
        return outs

    @property
    def layer_names(self) -> list[str]:
        names = [f"h{i + 1}:{lin.out_features}" for i, lin in enumerate(self.linears[:-1])]
        return [*names, f"softmax:{self.linears[-1].out_features}"]
