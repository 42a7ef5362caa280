"""Minibatch training of an ``Ensemble``: the one epoch loop, shared by runs and branched networks.

``Trainer.epoch()`` is one pass over every member's training rows: in a new order drawn from the
member's own batch generator each epoch (``shuffle_batches``, as Keras' ``fit``: ibsgd), or in
the same consecutive minibatches every epoch (IDNNs). Each member's loss is the mean
cross-entropy of its minibatch; members share no weights, so the summed loss gives each its own
gradient. Adam's epsilon is PyTorch's or, with ``adam_eps_hat``, TensorFlow's/Keras' ("epsilon
hat", ``eps_hat_as_torch_eps``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ibtui.config import TrainConfig
from ibtui.engine.measure import Diverged
from ibtui.engine.model import Ensemble

EVAL_ROWS = 2048
"""Rows per member evaluated at once (bounds memory for large sets and ensembles)."""


def make_optimizer(model: torch.nn.Module, name: str, lr: float, momentum: float = 0.0,
                   adam_eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam or SGD; the fused kernels where this torch has them (same maths, fewer launches)."""
    params = list(model.parameters())
    cls, kwargs = (torch.optim.Adam, {"eps": adam_eps}) if name == "adam" else (torch.optim.SGD, {"momentum": momentum})
    try:
        return cls(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch or unsupported device
        return cls(params, lr=lr, **kwargs)


def eps_hat_as_torch_eps(eps_hat: float, beta2: float, step: int) -> float:
    """The PyTorch Adam epsilon that gives TensorFlow's/Keras' update at ``step`` (1-based).

    TF: θ −= lr·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (sqrt(v) + ε̂); PyTorch: θ −= lr/(1 − β₁ᵗ) · m /
    (sqrt(v)/sqrt(1 − β₂ᵗ) + ε). They agree when ε = ε̂ / sqrt(1 − β₂ᵗ)."""
    return eps_hat / math.sqrt(1.0 - beta2 ** step)


def gather_rows(x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of index rows ``idx`` (S, n): (S, n, D) and (S, n)."""
    flat = idx.reshape(-1)  # index_select copies whole rows: several times faster than x_all[idx]
    return x_all.index_select(0, flat).view(*idx.shape, -1), y_all.index_select(0, flat).view(idx.shape)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted classes (S, B) of feature-major logits (S, C, B) (argmax over a contiguous last dim:
    many times faster than over the strided class dimension)."""
    return logits.detach().transpose(1, 2).contiguous().argmax(2)


@torch.no_grad()
def evaluate(model: Ensemble, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per member: (mean cross-entropy in nats, accuracy) on its rows ``idx`` (S, n); NaN when n = 0.
    A noisy network's noise comes from ``generator`` (default: the training noise generator)."""
    size, n = idx.shape
    if n == 0:
        return np.full(size, math.nan), np.full(size, math.nan)
    loss = torch.zeros(size, dtype=torch.float64, device=idx.device)
    correct = torch.zeros(size, dtype=torch.float64, device=idx.device)
    for start in range(0, n, EVAL_ROWS):
        x, y = gather_rows(x_all, y_all, idx[:, start:start + EVAL_ROWS])
        logits = model.logits(x, generator)
        loss += F.cross_entropy(logits, y, reduction="none").sum(1)
        correct += (predictions(logits) == y).sum(1)
    return (loss / n).cpu().numpy(), (correct / n).cpu().numpy()


def gradient_norms(total: torch.Tensor, squares: torch.Tensor, batches: int) -> tuple[float, float]:
    """Mean over members of ‖mean gradient‖ and ‖element-wise std of the gradients‖ (Frobenius,
    over one epoch's ``batches`` minibatches; population std) of a stacked (S, ...) weight."""
    mean = total / batches
    var = (squares / batches - mean * mean).clamp_(min=0.0)
    return float(mean.flatten(1).norm(dim=1).mean()), float(var.flatten(1).sum(1).sqrt().mean())


class Trainer:
    """An ensemble, its optimiser and each member's batch order: ``epoch()`` trains one epoch.

    ``train_idx`` (S, n): each member's training rows into ``x_all``/``y_all``; ``batch_seeds``:
    one seed per member for its batch-order generator. ``steps`` counts the optimiser steps
    taken (Adam's t), ``gradient_norms`` holds the last epoch's per-layer (mean, std) norms when
    ``train.gradient_stats`` is on.
    """

    def __init__(self, model: Ensemble, x_all: torch.Tensor, y_all: torch.Tensor, train_idx: torch.Tensor,
                 train: TrainConfig, batch_seeds: Sequence[int]) -> None:
        self.model, self.x_all, self.y_all, self.train_idx, self.cfg = model, x_all, y_all, train_idx, train
        self.opt = make_optimizer(model, train.optimizer, train.lr, train.momentum, train.adam_eps)
        self.eps_hat = train.optimizer == "adam" and train.adam_eps_hat
        self.batch_gens = [torch.Generator().manual_seed(int(seed)) for seed in batch_seeds]
        self.steps = 0
        self.gradient_norms: list[tuple[float, float]] = []

    def epoch(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """Train epoch ``number`` (1-based, for messages); per member mean minibatch loss and accuracy.
        Raises ``Diverged`` when a member's loss is NaN/inf."""
        bs, model, device = self.cfg.batch_size, self.model, self.train_idx.device
        size, n = self.train_idx.shape
        if self.cfg.shuffle_batches:
            order = torch.stack([torch.randperm(n, generator=g) for g in self.batch_gens]).to(device)
            rows = self.train_idx.gather(1, order)  # (S, n): each member's epoch order of its training rows
        else:  # the same consecutive minibatches in the same order every epoch (IDNNs)
            rows = self.train_idx
        model.train()
        loss_sum = torch.zeros(size, device=device)
        correct = torch.zeros(size, device=device)
        stats = self.cfg.gradient_stats
        if stats:
            grad_sum = [torch.zeros_like(w) for w in model.weights]
            grad_sq = [torch.zeros_like(w) for w in model.weights]
        for start in range(0, n, bs):
            x, y = gather_rows(self.x_all, self.y_all, rows[:, start:start + bs])
            logits = model.logits(x)  # (S, C, B)
            losses = F.cross_entropy(logits, y, reduction="none").mean(1)
            self.opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # members share no weights: each gets its own mean-loss gradient
            if stats:  # one fused call for all layers (fewer kernel launches on a GPU)
                grads = [w.grad for w in model.weights]
                torch._foreach_add_(grad_sum, grads)
                torch._foreach_addcmul_(grad_sq, grads, grads)
            self.steps += 1
            if self.eps_hat:
                for group in self.opt.param_groups:
                    group["eps"] = eps_hat_as_torch_eps(self.cfg.adam_eps, group["betas"][1], self.steps)
            self.opt.step()
            loss_sum += losses.detach() * y.shape[1]
            correct += (predictions(logits) == y).sum(1)
        if stats:
            batches = -(-n // bs)
            self.gradient_norms = [gradient_norms(total, squares, batches) for total, squares in zip(grad_sum, grad_sq)]
        train_loss = (loss_sum / n).cpu().numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(train_loss))
        if len(bad):
            raise Diverged(f"training loss of seed {model.seeds[bad[0]]} became {train_loss[bad[0]]} at epoch {number}")
        return train_loss, (correct / n).cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ state
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Optimiser state and batch generators, as checkpoint arrays (``resume.*``)."""
        out = {"resume.rng": np.stack([g.get_state().numpy() for g in self.batch_gens])}
        for index, state in self.opt.state_dict()["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"resume.opt.{index}.{name}"] = value.detach().cpu().numpy()
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore ``state_arrays`` output. Raises ValueError when it does not fit this trainer."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        params = list(self.model.parameters())
        for key, value in arrays.items():
            if key.startswith("resume.opt."):
                index, name = key[len("resume.opt."):].split(".", 1)
                if not index.isdigit() or int(index) >= len(params):
                    raise ValueError(f"optimiser state {key} names no parameter of this network")
                tensor = torch.tensor(np.asarray(value))  # a copy: the optimiser updates its state in place
                if tensor.ndim and tuple(tensor.shape) != tuple(params[int(index)].shape):
                    raise ValueError(f"optimiser state {key} has shape {tuple(tensor.shape)}; "
                                     f"the parameter has {tuple(params[int(index)].shape)}")
                if not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"optimiser state {key} holds NaN/inf")
                state.setdefault(int(index), {})[name] = tensor.to(self.train_idx.device)
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})
        steps = [s["step"] for s in state.values() if "step" in s]
        self.steps = int(float(steps[0].reshape(-1)[0])) if steps else 0
        generators = np.asarray(arrays["resume.rng"])
        if generators.ndim != 2 or generators.shape[0] != len(self.batch_gens) or generators.dtype != np.uint8:
            raise ValueError(f"the batch-order states have shape {generators.shape}; this run has "
                             f"{len(self.batch_gens)} generator(s)")
        for generator, value in zip(self.batch_gens, generators):
            generator.set_state(torch.as_tensor(value, dtype=torch.uint8))

    def branch(self, copies: int, batch_seeds: Sequence[int]) -> "Trainer":
        """A trainer of ``copies`` networks per member (member-major: member j's copies are rows
        j·copies ... j·copies + copies − 1), each starting from the member's weights and optimiser
        state, with its own batch order from ``batch_seeds``."""
        child = self.model.branch(copies, list(batch_seeds))
        trainer = Trainer(child, self.x_all, self.y_all, self.train_idx.repeat_interleave(copies, 0), self.cfg,
                          batch_seeds)
        state = {index: {name: (value.repeat_interleave(copies, 0) if value.ndim else value.clone())
                         for name, value in entry.items()}
                 for index, entry in self.opt.state_dict()["state"].items()}
        trainer.opt.load_state_dict({"state": state, "param_groups": trainer.opt.state_dict()["param_groups"]})
        trainer.steps = self.steps
        return trainer
