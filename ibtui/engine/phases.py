"""Gradient phases (Shwartz-Ziv & Tishby 2017): drift, then diffusion.

Per layer and epoch the trainer records the Frobenius norms of the mean and of the
standard deviation (element-wise, over the epoch's minibatches) of the gradient of that
layer's weight matrix. While ‖mean‖ ≫ ‖std‖ the gradients agree (drift, the fitting
phase); once ‖mean‖ < ‖std‖ they are dominated by minibatch noise (diffusion, when Tishby
saw compression). The transition epoch of a layer is the first epoch whose signal-to-noise
ratio ‖mean‖/‖std‖ is below 1 and stays below 1 for the next ``window`` − 1 recorded
epochs (all of them when fewer remain); None when that never happens.
"""

from __future__ import annotations

import numpy as np

WINDOW = 10


def snr(mean_norm: np.ndarray, std_norm: np.ndarray) -> np.ndarray:
    """‖mean‖/‖std‖ element-wise; +inf where the standard deviation is 0 (one minibatch per epoch)."""
    mean_norm, std_norm = np.asarray(mean_norm, dtype=np.float64), np.asarray(std_norm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std_norm > 0, mean_norm / np.where(std_norm > 0, std_norm, 1.0), np.inf)


def transition_epochs(epochs, mean_norm, std_norm, window: int = WINDOW) -> list[int | None]:
    """Per layer (columns of the (E, L) norm arrays): the drift→diffusion transition epoch or None."""
    epochs = np.asarray(epochs)
    ratio = snr(mean_norm, std_norm)
    if ratio.ndim != 2 or len(epochs) != ratio.shape[0]:
        raise ValueError(f"need (E, L) norms for E = {len(epochs)} epochs; got shape {ratio.shape}")
    below = ratio < 1.0
    # Pad with "below" so that a run of sub-1 ratios reaching the last epoch counts.
    padded = np.concatenate([below, np.ones((window - 1, below.shape[1]), dtype=bool)])
    stays = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0).all(axis=-1)[:len(epochs)]
    hit = stays & below
    first = hit.argmax(axis=0)
    return [int(epochs[first[layer]]) if hit[first[layer], layer] else None for layer in range(below.shape[1])]
