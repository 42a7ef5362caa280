"""Re-analysis without retraining: recompute information planes from a run's saved weights.

``analyze(run_dir, kind, vary=(param, values), fixed={...})`` rebuilds the run's network and
data from its ``config.toml``, loads the checkpoint of every measured epoch and evaluates the
estimator ``kind`` once per value of ``param`` (the bin-sensitivity question: the same
trajectories under 8, 12, ... 50 bins). Planes are named ``<plane>[<param>=<value>]``. The
result goes to ``analysis/<kind>-<param>.npz`` (atomic; ``epochs`` (E,), per plane ``.ixt`` and
``.ity`` (E, L) in bits, means over ensemble members, and ``.ixt_seeds``/``.ity_seeds``
(E, S, L) for ensembles) with a JSON description beside it; a later analysis of the same
estimator and parameter replaces both. The run's own events and arrays are never touched.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ibtui.config import build_estimator, config_from_dict
from ibtui.estimators.base import check_estimators
from ibtui.rundir.reader import ANALYSIS, load_run
from ibtui.rundir.store import CONFIG, atomic_write_files, npz_bytes
from ibtui.errors import UserError



def plane_label(plane: str, param: str, value: Any, fixed: dict[str, Any] | None = None) -> str:
    """``plane[param=value]``; without a varied parameter ``plane[k=v,...]`` of the fixed ones, or ``plane[defaults]``."""
    if param:
        return f"{plane}[{param}={value}]"
    return f"{plane}[{','.join(f'{k}={v}' for k, v in (fixed or {}).items()) or 'defaults'}]"


def analysis_stem(kind: str, param: str) -> str:
    return f"{kind}-{param}" if param else kind


def analyze(run_dir: str | Path, kind: str, vary: tuple[str, list[Any]] | None, fixed: dict[str, Any] | None = None,
            device: str | None = None, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Recompute ``kind``'s planes at every checkpointed measured epoch for each value of ``vary``.

    Returns the description written next to the arrays (estimator, parameter, values, planes,
    epochs, files). Raises UserError for a foreign run, an unknown estimator or parameter, a bad
    value, or a run without checkpoints.
    """
    from ibtui.engine.measure import measure_planes, member_workers, torch_threads
    from ibtui.engine.prepare import prepare

    run = load_run(run_dir)  # a foreign or malformed directory fails here, with a one-line error
    path = run.path
    param, values = vary if vary is not None else ("", [None])
    if not values:
        raise UserError("give at least one value to vary")
    estimators = [build_estimator(kind, {**(fixed or {}), **({param: value} if param else {})}) for value in values]
    raw = dict(run.config)
    if device is not None:
        raw["train"] = {**(raw.get("train") if isinstance(raw.get("train"), dict) else {}), "device": device}
    cfg = config_from_dict(raw, source=str(path / CONFIG))
    prep = prepare(cfg, from_run=True)
    check_estimators(estimators, prep.mi_sets)  # ParameterError (one line) before any work
    epochs = run.checkpointed_epochs()
    if not epochs:
        raise UserError(f"{path} has no checkpoints of measured epochs to analyze (store.checkpoints was off?)")
    model = prep.model
    if cfg.model.noise_std > 0 and not (estimators[0].pools or estimators[0].needs_centres):
        raise UserError(f"{kind} assumes a deterministic layer; this run's network is noisy (model.noise_std = "
                        f"{cfg.model.noise_std}): use noisy_mc or a plug-in estimator")
    if estimators[0].needs_centres:
        if not cfg.model.noise_std > 0:
            raise UserError(f"{kind} measures noisy networks; this run's network has no noise")
        if any(not math.isclose(est.noise_std, cfg.model.noise_std, rel_tol=1e-12) for est in estimators):
            raise UserError(f"{kind}.noise_std must equal the run's model.noise_std ({cfg.model.noise_std})")
    planes: dict[str, list[np.ndarray]] = {}  # label → per epoch (2, S, L)
    started = time.perf_counter()
    threads = cfg.train.threads or torch.get_num_threads()
    for index, epoch in enumerate(epochs):
        try:
            arrays = run.checkpoint(epoch)
            model.load_state_arrays({k: torch.as_tensor(v) for k, v in arrays.items() if not k.startswith("resume.")})
        except (UserError, ValueError, KeyError) as exc:
            raise UserError(f"checkpoint of epoch {epoch} in {path} is unreadable: {exc}") from None
        with torch_threads(cfg.train.threads):  # as the run measured: the same planes back
            results = measure_planes(model, prep.x_all, prep.mi_idx, prep.mi_sets, estimators, epoch,
                                     cfg.model.noise_draws, member_workers(model, estimators, threads))
        for value, result in zip(values, results):
            for plane, members in result.items():
                planes.setdefault(plane_label(plane, param, value, fixed), []).append(np.stack([members.ixt, members.ity]))
        if on_progress is not None:
            on_progress(index + 1, len(epochs))
    out: dict[str, np.ndarray] = {"epochs": np.asarray(epochs, dtype=np.int64)}
    for label, stack in planes.items():
        data = np.stack(stack)  # (E, 2, S, L)
        out[f"{label}.ixt"], out[f"{label}.ity"] = data[:, 0].mean(axis=1), data[:, 1].mean(axis=1)
        if model.size > 1:
            out[f"{label}.ixt_seeds"], out[f"{label}.ity_seeds"] = data[:, 0], data[:, 1]
    stem = analysis_stem(kind, param)
    description = {
        "estimator": kind, "param": param, "values": list(values) if param else [], "fixed": dict(fixed or {}),
        "planes": list(planes), "epochs": epochs, "layers": model.layer_names, "seeds": model.seeds,
        "arrays": f"{ANALYSIS}/{stem}.npz", "seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store_analysis(path / ANALYSIS, stem, out, description)
    return description


def store_analysis(folder: Path, stem: str, arrays: dict[str, np.ndarray], description: dict[str, Any]) -> None:
    """``<stem>.npz`` and ``<stem>.json`` in ``folder``, replaced together; UserError (one line) when
    they cannot be stored (full disk, read-only...), with the folder as it was."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{folder} is not a plain directory; refusing to write there")
    created = not folder.exists()
    try:
        folder.mkdir(exist_ok=True)
        atomic_write_files({folder / f"{stem}.npz": npz_bytes(arrays),
                            folder / f"{stem}.json": (json.dumps(description, indent=2) + "\n").encode()})
    except OSError as exc:
        if created:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise UserError(f"cannot store the analysis in {folder}: {exc.strerror or exc}") from None
