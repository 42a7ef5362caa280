"""The network: an MLP with any hidden widths and activation, softmax output.

``forward_layers`` returns the activations of every hidden layer and the softmax
output, the "layers" T of the information plane (as in IDNNs and ibsgd).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

FAST_TANH_MIN_ELEMENTS = 1 << 15
"""CPU tensors this large take tanh as 2σ(2x) − 1 (``fast_tanh``); smaller ones, torch.tanh."""


class _SigmoidTanh(torch.autograd.Function):
    """tanh(x) = 2σ(2x) − 1: within 2e-7 of torch.tanh in float32, and several times faster on CPU
    (torch's vectorised sigmoid against its scalar-speed tanh). Backward: (1 − y²)·grad, as tanh's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.mul(x, 2.0).sigmoid_().mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh for training: ``_SigmoidTanh`` for large CPU tensors (a 50-seed ensemble's batch), else
    torch.tanh (a single network's batch, where the call's overhead dominates). Results agree to 2e-7."""
    if x.device.type == "cpu" and x.numel() >= FAST_TANH_MIN_ELEMENTS and x.dtype == torch.float32:
        return _SigmoidTanh.apply(x)
    return torch.tanh(x)


ACTIVATION_FNS = {
    "tanh": fast_tanh,
    "relu": torch.relu,
    "linear": lambda a: a,
    "sigmoid": torch.sigmoid,
    "softplus": nn.functional.softplus,
    "elu": nn.functional.elu,
}


@torch.no_grad()
def draw_weights(weight: torch.Tensor, bias: torch.Tensor, init: str, last: bool) -> None:
    """One layer's weights (out, in) or (out, in, kh, kw) drawn by scheme ``init`` (see ``MLP.reset``),
    its bias zeroed; ``last``: the softmax layer. Fans count the kernel: fan_in = in·kh·kw,
    fan_out = out (a dense layer's width, as ibsgd; out·kh·kw for a convolution)."""
    if init == "torch":
        return
    fan_in = weight[0].numel()
    fan_out = weight.shape[0] * (weight[0, 0].numel() if weight.ndim > 2 else 1)
    if init == "keras" or (init == "ibsgd" and last):
        nn.init.xavier_uniform_(weight)  # U(±sqrt(6 / (fan_in + fan_out)))
    else:
        std = 1.0 / math.sqrt(fan_out if init == "ibsgd" else fan_in)
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(bias)


class MLP(nn.Module):
    """Input (D) → hidden widths with ``activation`` → linear to ``n_classes`` logits."""

    def __init__(self, n_inputs: int, widths: list[int], n_classes: int, activation: str = "tanh",
                 init: str = "idnns") -> None:
        super().__init__()
        if init not in ("idnns", "ibsgd", "keras", "torch"):
            raise ValueError(f"unknown init scheme {init!r}")
        sizes = [n_inputs, *widths, n_classes]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation
        self._act = ACTIVATION_FNS[activation]
        if init != "torch":
            self.reset(init)

    @torch.no_grad()
    def reset(self, init: str) -> None:
        """Draw the weights as a reference code does (biases 0; see ``ModelConfig.init``):
        ``idnns`` truncated normal, std 1/sqrt(fan_in), every layer (IDNNs' model.py);
        ``ibsgd`` truncated normal, std 1/sqrt(fan_out), hidden layers, and glorot_uniform for the
        softmax layer (ibsgd's IBnet_SaveActivations); ``keras`` glorot_uniform everywhere (Keras'
        Dense default: ibsgd's MNIST_SaveActivations). Truncation at ±2 std, as tf.truncated_normal."""
        last = len(self.linears) - 1
        for index, lin in enumerate(self.linears):
            draw_weights(lin.weight, lin.bias, init, last=index == last)

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


def quantize(a: torch.Tensor, bits: int, low: float, high: float) -> torch.Tensor:
    """Round ``a`` to the nearest of 2^bits equally spaced levels from ``low`` to ``high`` (clipped
    to that range). Forward: the levels; backward: the identity (straight-through estimator)."""
    step = (high - low) / (2 ** bits - 1)
    levels = torch.round((a.clamp(low, high) - low) / step) * step + low
    return a + (levels - a).detach()


def checkpoint_name(key: str) -> str:
    """``Ensemble.state_dict`` key → checkpoint array name (``weights.0`` → ``weight.0``)."""
    return key.replace("weights.", "weight.").replace("biases.", "bias.")


def state_name(name: str) -> str:
    """Checkpoint array name → ``Ensemble.state_dict`` key (the inverse of ``checkpoint_name``)."""
    return name.replace("weight.", "weights.").replace("bias.", "biases.")


class StackedNetwork(nn.Module):
    """What every network the engine trains shares: S members with stacked parameters ``weights.l``
    (S, ...) and ``biases.l``, saved under the checkpoint names ``weight.l``/``bias.l``.
    Subclasses set ``seeds`` and ``layer_names`` and define ``logits`` and ``forward_layers``."""

    seeds: list[int]
    layer_names: list[str]
    weights: nn.ParameterList
    biases: nn.ParameterList

    @property
    def size(self) -> int:
        """Number of members S."""
        return len(self.seeds)

    @property
    def widths(self) -> list[int]:
        """Units per sample of each measured layer (flattened), the softmax output last."""
        return [int(name.rsplit(":", 1)[1]) for name in self.layer_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (S, B, n_classes), contiguous."""
        return self.logits(x).transpose(1, 2).contiguous()

    def state_arrays(self) -> dict[str, torch.Tensor]:
        """The weights under their checkpoint names (``weight.l``, ``bias.l``)."""
        return {checkpoint_name(k): v for k, v in self.state_dict().items()}

    def load_state_arrays(self, arrays: dict[str, torch.Tensor]) -> None:
        """Load ``state_arrays`` output; raises ValueError if names or shapes do not match this network."""
        own = self.state_arrays()
        if set(arrays) != set(own):
            raise ValueError(f"checkpoint has weights {sorted(arrays)}; this network needs {sorted(own)}")
        for key, value in own.items():
            if tuple(arrays[key].shape) != tuple(value.shape):
                raise ValueError(f"checkpoint weight {key} has shape {tuple(arrays[key].shape)}; "
                                 f"this network needs {tuple(value.shape)}")
        self.load_state_dict({state_name(k): v for k, v in arrays.items()})


class Ensemble(StackedNetwork):
    """S networks of the same shape trained together: stacked weights, one batched forward.

    Member s is exactly the ``MLP`` that ``torch.manual_seed(seeds[s])`` builds (same
    initial weights), so a one-member ensemble is one run and an S-member ensemble is S runs
    with those seeds (up to float rounding in training: a large ensemble's batches take tanh as
    2σ(2x) − 1, ``fast_tanh``). Weights ``weight.l`` are (S, out, in) and biases ``bias.l`` (S, 1, out);
    every forward takes inputs (S, B, D), one batch per member, or (B, D) shared by all.
    Inside, activations are feature-major, (S, width, B): W·x as ``baddbmm(b, W, x)`` with the
    batch as the long dimension is 5–10× faster on CPU than x·Wᵀ for these narrow layers.
    With ``quantize_bits`` > 0 every hidden activation goes through ``quantize`` while
    ``quantized`` is true (the softmax output stays float).
    """

    def __init__(self, n_inputs: int, widths: list[int], n_classes: int, activation: str = "tanh",
                 init: str = "idnns", seeds: list[int] | tuple[int, ...] = (0,),
                 quantize_bits: int = 0, quantize_range: tuple[float, float] | None = None,
                 noise_std: float = 0.0) -> None:
        super().__init__()
        self.noise_std = float(noise_std)
        self.noisy = self.noise_std > 0  # Gaussian noise after every hidden activation (Goldfeld et al.)
        self.noise_generator: torch.Generator | None = None
        if quantize_bits and quantize_range is None:
            raise ValueError("quantized activations need a range (low, high)")
        self.quantize_bits = quantize_bits
        self.quantize_range = quantize_range
        self.quantized = bool(quantize_bits)  # switched off to evaluate the same weights in float
        if not seeds:
            raise ValueError("an ensemble needs at least one seed")
        members = []
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(MLP(n_inputs, widths, n_classes, activation, init))
        self.seeds = [int(s) for s in seeds]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.linears[i].weight.detach() for m in members]).contiguous())
            for i in range(len(widths) + 1))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.linears[i].bias.detach()[None, :] for m in members]).contiguous())
            for i in range(len(widths) + 1))
        self.activation = activation
        self._act = ACTIVATION_FNS[activation]
        self.layer_names = members[0].layer_names

    def _inputs(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """Inputs (B, D) or (size, B, D) as feature-major (size, D, B) (a view)."""
        x = x.expand(size, *x.shape) if x.ndim == 2 else x
        return x.transpose(1, 2)

    def _hidden(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, the activation, and T = S + noise for a noisy network, else S itself), feature-major
        (S', out, B). Noise comes from ``generator``, by default the training noise generator."""
        a = self._act(torch.baddbmm(b.transpose(1, 2), w, x))
        if self.quantized and self.quantize_bits:
            a = quantize(a, self.quantize_bits, *self.quantize_range)
        if not self.noisy:
            return a, a
        noise = torch.randn((a.shape[0], a.shape[2], a.shape[1]), generator=generator or self.generator(a.device),
                            device=a.device, dtype=a.dtype)  # drawn batch-major (S', B, out)
        return a, a + self.noise_std * noise.transpose(1, 2)

    def generator(self, device: torch.device) -> torch.Generator:
        """The noise generator (seeded with the first member's seed + 2^32; its state is checkpointed)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self.noise_generator is None or self.noise_generator.device != device:
            self.noise_generator = torch.Generator(device=device).manual_seed(self.seeds[0] + 2 ** 32)
        return self.noise_generator

    def __deepcopy__(self, memo: dict) -> "Ensemble":
        """A copy with its own noise generator in the same state (torch.Generator has no deepcopy)."""
        generator, self.noise_generator = self.noise_generator, None
        try:
            clone = copy.copy(self)  # shallow first, then deep-copy the module state the usual way
            clone.__dict__ = copy.deepcopy(self.__dict__, memo)
        finally:
            self.noise_generator = generator
        if generator is not None:
            clone.noise_generator = torch.Generator(device=generator.device)
            clone.noise_generator.set_state(generator.get_state())
        return clone

    def logits(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits, feature-major (S, n_classes, B): the layout ``F.cross_entropy`` takes as (N, C, d1).
        A noisy network draws its noise from ``generator`` (default: the training noise generator)."""
        x = self._inputs(x, self.size)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            x = self._hidden(x, w, b, generator)[1]
        return torch.baddbmm(self.biases[-1].transpose(1, 2), self.weights[-1], x)

    def forward_layers(self, x: torch.Tensor, members: slice = slice(None), centres: bool = False,
                       generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per hidden layer, then the softmax output: activations (S', B, width) of ``members``, contiguous.

        x is (B, D), shared, or (S', B, D), one batch per selected member. In a noisy network the
        hidden layers are T = S + noise (one draw, from ``generator``), or with ``centres`` the
        pre-noise S (the noise still propagates to the next layer).
        """
        pre, post = self.forward_both(x, members, generator)
        return pre if centres else post

    def forward_both(self, x: torch.Tensor, members: slice = slice(None),
                     generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(pre-noise S, T = S + noise) per hidden layer, each followed by the softmax output, of one
        forward pass (the same list twice for a network without noise); layout as ``forward_layers``."""
        weights = [w[members] for w in self.weights]
        biases = [b[members] for b in self.biases]
        x = self._inputs(x, weights[0].shape[0])
        pre, post = [], []
        for w, b in zip(weights[:-1], biases[:-1]):
            centre, x = self._hidden(x, w, b, generator)
            pre.append(centre)
            post.append(x)
        output = torch.softmax(torch.baddbmm(biases[-1].transpose(1, 2), weights[-1], x), dim=1)
        pre = [out.transpose(1, 2).contiguous() for out in (*pre, output)]
        if not self.noisy:
            return pre, pre
        return pre, [out.transpose(1, 2).contiguous() for out in (*post, output)]

    @torch.no_grad()
    def branch(self, copies: int, seeds: list[int]) -> "Ensemble":
        """A new ensemble holding each member ``copies`` times (member-major: member j's copies are
        members j·copies ... j·copies + copies − 1), with the given ``seeds`` (one per new member,
        seeding its noise generator's stream); weights are copied, nothing is shared."""
        if len(seeds) != self.size * copies:
            raise ValueError(f"branching {self.size} members {copies} times needs {self.size * copies} seeds")
        weights, biases, generator = self.weights, self.biases, self.noise_generator
        self.weights = self.biases = None  # type: ignore[assignment]  (copied below, not by deepcopy)
        self.noise_generator = None
        try:
            clone = copy.deepcopy(self)
        finally:
            self.weights, self.biases, self.noise_generator = weights, biases, generator
        clone.weights = nn.ParameterList(nn.Parameter(w.detach().repeat_interleave(copies, 0).contiguous())
                                         for w in weights)
        clone.biases = nn.ParameterList(nn.Parameter(b.detach().repeat_interleave(copies, 0).contiguous())
                                        for b in biases)
        clone.seeds = [int(s) for s in seeds]
        return clone
