"""Noisy networks (Goldfeld et al. 2019): MI of T = S + Z by Monte Carlo over the known mixture.

In a noisy network every hidden layer adds Gaussian noise Z ~ N(0, σ² I) after its
activation, in training and in evaluation, so T_l = S_l + Z_l with S_l = f(W T_{l−1} + b):
I(X;T_l) is finite and well defined. Given X = x, S_l is random only through the noise of
the layers before l, and T_l | X = x is a Gaussian mixture centred on the draws of S_l.

The estimator gets, per layer, *centres*: a tensor (m, N, d) of m independent draws of S_l
for each of the N samples (the engine runs the noisy forward pass m times and keeps the
pre-noise activations; a plain (N, d) tensor is one draw). With c_{k,i} the k-th draw for
sample i, and p_A(t) = (1/|A|) Σ_{a∈A} φ_σ(t − a) the mixture of the centres in A:

    h(T)       = −E log p_C0(T),     C0 = {c_{0,i}}: one draw per sample (the marginal)
    h(T|X=x_i) = −E log p_Ci(T),     Ci = {c_{k,i}, k < m}: the m draws of sample i
    h(T|Y=c)   = −E log p_C0c(T),    C0c = {c_{0,i} : y_i = c}

each expectation over T drawn from that same mixture (``mc`` draws per centre: pick a
centre, add σ·ξ), and log p evaluated exactly (log-sum-exp over all its centres). h(T) and
h(T|Y) share their draws (each draw from class c's centres is scored under the whole mixture
and under class c's), so the I(T;Y) estimate is H(Y) + mean log p̂(y|T) ≤ H(Y) for every
draw (independent draws read 1.06 bits > H(Y) on a 10-unit layer). Then

    I(X;T) = h(T) − (1/N) Σ_i h(T|X=x_i),   I(T;Y) = h(T) − Σ_c p(c) h(T|Y=c)   (÷ ln 2: bits).

Assumptions and bias: X is the sample (identical inputs have the same conditional law, so
averaging over samples is exact for the empirical distribution). h(T) uses one draw per
sample for the marginal, the sample-propagation estimator of Goldfeld et al.: unbiased for
the mixture of those N centres, whose entropy is below the population's (I(X;T) is biased
down by at most the finite-N gap, which they bound as O(N^{−1/2})). With m draws per input,
h(T|X) is the entropy of an m-component mixture standing for a continuous law: biased down,
so I(X;T) is biased up by a little, shrinking as m grows. For the first layer (no noise
upstream) all m draws coincide and h(T|X) = (d/2) ln(2πeσ²) is used exactly (for any
sample whose draws coincide). Monte Carlo error:
about std(log p)/sqrt(N·mc) nats. The softmax output has no noise of its own; it is
measured as if N(0, σ² I) were added (as the KDE bounds do), which is the quantity a noisy
read-out would carry.

Cost: O(mc · N² · d) per layer for h(T) (chunked like KDE: ``chunk_size`` rows at a time,
memory about 2 · chunk_size · N float64), O(mc · N · m² · d) for h(T|X); float64 on the
activations' device; MC draws from a CPU generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from ibtui.estimators._torch import no_grad, torch

from ibtui.errors import ParameterError
from ibtui.estimators.base import LN2, MAX_SEED, check_int, Estimator, MISet, Plane, require_finite


def mixture_entropy_nats(centres: torch.Tensor, sigma: float, mc: int, generator: torch.Generator,
                         chunk_size: int = 512) -> float:
    """Entropy (nats) of (1/K) Σ_k N(centres_k, σ² I) for centres (K, d), by Monte Carlo:
    ``mc`` draws per centre, each log-density exact (log-sum-exp over all K centres)."""
    labels = torch.zeros(centres.shape[0], dtype=torch.int64, device=centres.device)
    return mixture_entropies_nats(centres, labels, 1, sigma, mc, generator, chunk_size)[0]


def mixture_entropies_nats(centres: torch.Tensor, labels: torch.Tensor, n_classes: int, sigma: float, mc: int,
                           generator: torch.Generator, chunk_size: int = 512) -> tuple[float, float]:
    """(h(T), Σ_c p(c) h(T|Y=c)) in nats for T from (1/K) Σ_k N(centres_k, σ² I), Y = labels of the
    centres, p(c) = K_c / K. Monte Carlo with common draws: ``mc`` draws T = c_k + σξ per centre k,
    each scored under the whole mixture and under its own class's mixture (log-sum-exp, exact).
    With common draws the difference is H(Y) + mean log p̂(y|T) ≤ H(Y) for every draw."""
    k, d = centres.shape
    centres = centres.to(torch.float64)
    points = centres.repeat(mc, 1)
    own = labels.repeat(mc)
    points = points + sigma * torch.randn(points.shape, generator=generator, dtype=torch.float64).to(centres.device)
    one_hot = torch.nn.functional.one_hot(labels, n_classes).to(torch.float64)  # (K, C)
    sizes = one_hot.sum(dim=0)
    sq = (centres * centres).sum(dim=1)
    log_all = log_own = 0.0
    for start in range(0, points.shape[0], chunk_size):
        block = points[start:start + chunk_size]
        scaled = torch.addmm(sq[None, :], block, centres.T, alpha=-2.0).add_((block * block).sum(dim=1, keepdim=True))
        scaled.clamp_(min=0.0).mul_(-0.5 / sigma ** 2)
        top = scaled.max(dim=1, keepdim=True).values  # the nearest centre: keeps exp() from underflowing
        per_class = scaled.sub_(top).exp_() @ one_hot  # (rows, C) sums of exp over each class's centres
        log_all += float((per_class.sum(dim=1).log() + top[:, 0]).sum())
        log_own += float((per_class.gather(1, own[start:start + chunk_size, None]).log_()[:, 0]
                          - sizes[own[start:start + chunk_size]].log() + top[:, 0]).sum())
    log_norm = 0.5 * d * math.log(2 * math.pi * sigma ** 2)
    count = points.shape[0]
    return -(log_all / count - math.log(k) - log_norm), -(log_own / count - log_norm)


def conditional_entropy_nats(draws: torch.Tensor, sigma: float, mc: int, generator: torch.Generator) -> float:
    """Mean over samples i of the entropy (nats) of (1/m) Σ_k N(draws[k, i], σ² I); draws (m, N, d)."""
    m, n, d = draws.shape
    gaussian = 0.5 * d * math.log(2 * math.pi * math.e * sigma ** 2)
    draws = draws.to(torch.float64).permute(1, 0, 2)  # (N, m, d)
    coincide = (draws == draws[:, :1]).all(dim=2).all(dim=1)  # one component: the Gaussian's entropy, exactly
    mixed = draws[~coincide]
    if not len(mixed):
        return gaussian
    points = mixed.repeat(1, mc, 1)  # (N', mc·m, d): mc draws from each of the m components
    points = points + sigma * torch.randn(points.shape, generator=generator, dtype=torch.float64).to(draws.device)
    dist = torch.cdist(points, mixed).pow_(2)  # (N', mc·m, m)
    log_p = torch.logsumexp(dist.mul_(-0.5 / sigma ** 2), dim=2) - math.log(m) - 0.5 * d * math.log(2 * math.pi * sigma ** 2)
    return (float(-log_p.mean(dim=1).sum()) + gaussian * int(coincide.sum())) / n


@dataclass(frozen=True)
class NoisyMixture(Estimator):
    """MI of a noisy network's layers (T = S + N(0, σ² I)) by Monte Carlo over the known Gaussian
    mixture (Goldfeld et al. 2019), in bits. ``noise_std`` σ must be the network's
    (``model.noise_std``); ``draws`` m: noisy forward passes per input for h(T|X); ``mc``: Monte
    Carlo draws per mixture component; ``seed`` seeds them. Layers are (m, N, d) centres, or
    (N, d) for one draw (module docstring: definitions, bias, cost)."""

    noise_std: float = 0.1
    draws: int = 8
    mc: int = 1
    seed: int = 0
    chunk_size: int = 512

    kind: ClassVar[str] = "noisy_mc"
    summary: ClassVar[str] = ("Noisy network (Goldfeld et al. 2019): Monte Carlo entropy of the known Gaussian "
                              "mixture, sample-propagated, for networks with model.noise_std = σ")
    needs_centres: ClassVar[bool] = True

    def validate(self) -> None:
        if not (math.isfinite(self.noise_std) and self.noise_std > 0):
            raise ParameterError(f"estimators.noisy_mc.noise_std must be a finite number > 0; got {self.noise_std}")
        for name in ("draws", "mc", "chunk_size"):
            check_int(f"estimators.noisy_mc.{name}", getattr(self, name), 1)
        check_int("estimators.noisy_mc.seed", self.seed, 0, MAX_SEED)

    @no_grad
    def estimate(self, layers: Sequence[torch.Tensor], mi_set: MISet) -> dict[str, Plane]:
        require_finite(layers, "noisy_mc")
        generator = torch.Generator().manual_seed(self.seed)
        y = mi_set.y
        out = []
        for centres in layers:
            draws = centres if centres.ndim == 3 else centres[None]
            first = draws[0]
            h_t, h_t_y = mixture_entropies_nats(first, y.to(first.device), mi_set.n_classes, self.noise_std,
                                                self.mc, generator, self.chunk_size)
            h_t_x = conditional_entropy_nats(draws, self.noise_std, self.mc, generator)
            out.append(((h_t - h_t_x) / LN2, (h_t - h_t_y) / LN2))
        mi = np.asarray(out, dtype=np.float64).reshape(len(layers), 2)
        return {self.kind: (mi[:, 0].copy(), mi[:, 1].copy())}
