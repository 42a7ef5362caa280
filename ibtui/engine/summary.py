"""Compression summaries of information-plane trajectories, in bits, with one statistic throughout.

Per layer: the peak I(X;T) and its epoch, the final I(X;T) and I(T;Y), and the compression
(peak − final I(X;T), the drop from the peak). For an ensemble every number is the **mean over
the members of each member's own value** (member s's peak, its epoch, its final value, its drop),
with the members' standard deviation (ddof = 1) beside it in ``*_sd`` — never the peak of the
mean trajectory next to the spread of member peaks. ``statistic`` says which it is. ``caps``
names the caps the final values sit at (I(X;T) = H(X), I(T;Y) = H(Y), a pooled H(T|X) at log2 of
its pool), where the estimate is saturated rather than measured.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CAP_TOLERANCE = 1e-6
"""Bits: a value within this of its cap sits at the cap."""

STATISTICS = ("peak_ixt", "peak_epoch", "final_ixt", "final_ity", "compression")


def member_values(epochs: np.ndarray, ixt: np.ndarray, ity: np.ndarray) -> dict[str, np.ndarray]:
    """Each member's own peak, peak epoch, final values and compression from (E, S) trajectories."""
    peak_at = ixt.argmax(axis=0)
    members = np.arange(ixt.shape[1])
    peak = ixt[peak_at, members]
    return {"peak_ixt": peak, "peak_epoch": np.asarray(epochs)[peak_at].astype(np.float64),
            "final_ixt": ixt[-1], "final_ity": ity[-1], "compression": peak - ixt[-1]}


def compression_table(epochs: Sequence[int], ixt: np.ndarray, ity: np.ndarray, layers: Sequence[str],
                      h_x: float | None = None, h_y: float | None = None,
                      saturated: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row per layer from trajectories ``ixt``/``ity`` of shape (E, L) (one network) or (E, S, L)
    (S members); ``saturated`` (L,): the final pooled H(T|X) at its cap (module docstring)."""
    ixt = np.asarray(ixt, dtype=np.float64)
    ity = np.asarray(ity, dtype=np.float64)
    if ixt.ndim == 2:
        ixt, ity = ixt[:, None, :], ity[:, None, :]
    size = ixt.shape[1]
    rows = []
    for layer, name in enumerate(layers):
        values = member_values(np.asarray(epochs), ixt[:, :, layer], ity[:, :, layer])
        row: dict[str, Any] = {"layer": name, "members": size,
                               "statistic": "one network" if size == 1 else f"mean ± sd over {size} networks"}
        for key in STATISTICS:
            row[key] = float(values[key].mean())
            row[f"{key}_sd"] = float(values[key].std(ddof=1)) if size > 1 else None
        if size == 1:
            row["peak_epoch"] = int(row["peak_epoch"])
        caps = []
        if h_x is not None and row["final_ixt"] >= h_x - CAP_TOLERANCE:
            caps.append("I(X;T) = H(X)")
        if h_y is not None and row["final_ity"] >= h_y - CAP_TOLERANCE:
            caps.append("I(T;Y) = H(Y)")
        if saturated is not None and bool(np.asarray(saturated)[layer]):
            caps.append("H(T|X) at its cap")
        row["caps"] = caps
        rows.append(row)
    return rows
