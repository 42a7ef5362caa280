"""The information plane of any PyTorch model, recorded from your own training loop.

>>> rec = ibtui.Recorder(model, layers=["features.3", "fc1", "fc2"], inputs=x_mi, labels=y_mi,
...                      estimators={"binning": {"bin_size": 0.07}, "kde": {}}, schedule="log",
...                      epochs=100, run_dir="runs/mine")
>>> for epoch in range(100):
...     train_one_epoch(model)
...     rec.step(epoch + 1, train_loss=..., test_acc=...)   # measures when the schedule says so
>>> rec.close()

Layers are picked by module name (``fnmatch`` patterns allowed, e.g. ``"features.*"``), through
forward hooks; each layer's output (the first tensor of a tuple) is flattened per sample. The MI
set (``inputs``, ``labels``) is run through the model in batches of ``batch_size`` in eval mode
under ``torch.no_grad()`` (the model's mode is restored), keeping only the hooked layers' outputs.
The planes come from the same measurement core as ibtui's own runs (``estimate_layers``), in bits;
epoch 0 (the model as given) is measured when the recorder is created. The directory written is
the run-directory contract (meta.json, config.toml, events.jsonl, curves.jsonl, planes.npz,
curves.npz, a lock while recording), so ``ibtui replay`` follows it live and ``ibtui export``
and ``ibtui.load_run`` read it. Scalars passed to ``step`` (losses in nats, accuracies) become
the run's curves; ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` also go into the
measured epochs' records.
"""

from __future__ import annotations

import fnmatch
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import ibtui
from ibtui.config import ScheduleConfig, build_estimator, validate_schedule
from ibtui.engine.measure import estimate_layers, stack_results
from ibtui.engine.schedule import Schedule, plane_distance
from ibtui.errors import UserError
from ibtui.estimators import MISet
from ibtui.rundir.records import MeasureRecord
from ibtui.rundir.store import CURVES, PLANES, RunStore, utc_stamp

RECORDS = ("train_loss", "train_acc", "test_loss", "test_acc")


def resolve_layers(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Module names matching ``patterns`` (exact names or fnmatch patterns), in the model's order.
    UserError when a pattern matches nothing."""
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        matched = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise UserError(f"no module of the model is named {pattern!r}; modules: {', '.join(names[:30])}")
        chosen += [n for n in matched if n not in chosen]
    order = {name: i for i, name in enumerate(names)}
    return sorted(chosen, key=order.__getitem__)


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise UserError(f"a recorded layer returned {type(output).__name__}, not a tensor")


class Recorder:
    """Measure the information plane of ``model``'s ``layers`` on (``inputs``, ``labels``) during
    training, into a run directory (see the module docstring). Use as a context manager, or call
    ``close()``; an exception inside ``with`` marks the run failed."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[str], inputs: Any, labels: Any,
                 estimators: Mapping[str, Mapping[str, Any]] | None = None, schedule: str | Mapping[str, Any] = "log",
                 epochs: int | None = None, run_dir: str | Path | None = None, runs_dir: str | Path = "runs",
                 name: str = "recorder", description: str = "", batch_size: int = 512) -> None:
        self.model = model
        self.layer_modules = resolve_layers(model, layers)
        self.inputs = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        if len(y) != len(self.inputs) or len(y) < 2:
            raise UserError(f"inputs ({len(self.inputs)}) and labels ({len(y)}) must be two or more samples each")
        if y.dtype.kind not in "iu" or y.min() < 0:
            raise UserError("labels must be class indices 0..C-1")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = batch_size
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        flat = self.inputs.detach().reshape(len(y), -1).cpu().numpy()
        self.mi_set = MISet.from_arrays(flat, y, device=self.device)
        specs = dict(estimators or {"binning": {"bin_size": 0.07}})
        self.estimators = [build_estimator(kind, dict(params)) for kind, params in specs.items()]
        raw_schedule = {"kind": schedule} if isinstance(schedule, str) else dict(schedule)
        self.schedule_cfg = ScheduleConfig(**raw_schedule) if _schedule_keys(raw_schedule) else None
        if self.schedule_cfg is None:
            raise UserError(f"unknown schedule settings {sorted(raw_schedule)}; see ibtui.config.ScheduleConfig")
        if self.schedule_cfg.kind == "delta_exact":
            raise UserError("the Recorder cannot go back to skipped epochs (delta_exact): use delta_approx")
        if self.schedule_cfg.kind in ("log", "stepped", "stepped_mnist") and not epochs:
            raise UserError(f"the {self.schedule_cfg.kind} schedule needs epochs= (the number of training epochs)")
        validate_schedule(self.schedule_cfg, [p for est in self.estimators for p in est.planes])
        self.epochs = int(epochs) if epochs else 10**9
        self.schedule = Schedule(self.schedule_cfg, self.epochs)
        self.planes = [p for est in self.estimators for p in est.planes]
        self.distance_plane = self.schedule_cfg.estimator or self.planes[0]
        self.records: list[dict[str, Any]] = []
        self.curves: dict[str, list[float]] = {"epoch": []}
        self.closed = False
        self._last_write = 0.0
        layers = self._activations()
        widths = [h.shape[1] for h in layers]
        self.layer_names = [f"{n}:{w}" for n, w in zip(self.layer_modules, widths)]
        config = {"preset": name, "description": description, "recorder": {
            "layers": self.layer_modules, "batch_size": batch_size, "n_mi": len(y), "epochs": epochs or 0,
            "model": type(model).__name__}, "schedule": raw_schedule,
            "estimators": {kind: dict(params) for kind, params in specs.items()}}
        import tomli_w

        meta = {"preset": name, "description": description, "kind": "recorder",
                "versions": {"ibtui": ibtui.__version__, "python": platform.python_version(),
                             "torch": torch.__version__, "numpy": np.__version__},
                "device": str(self.device), "seed": 0, "seeds": [0], "dataset": "user", "layers": self.layer_names,
                "planes": self.planes, "epochs_total": int(epochs or 0), "epochs_done": 0, "n_mi": len(y),
                "h_x": self.mi_set.h_x, "h_y": self.mi_set.h_y, "host": platform.node(), "pid": os.getpid(),
                "argv": sys.argv}
        path = Path(run_dir) if run_dir is not None else None
        root, run_name = (path.parent, path.name) if path is not None else (Path(runs_dir), None)
        self.store = RunStore.create(root, name, tomli_w.dumps(_toml_safe(config)), meta, run_name)
        self.path = self.store.path
        self.next_epoch: int | None = self.schedule.first()
        self._measure(0, {}, layers)

    # ------------------------------------------------------------------ measuring
    @torch.no_grad()
    def _activations(self) -> list[torch.Tensor]:
        """Every recorded layer's outputs on the MI set, flattened per sample: (N, d) each."""
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in self.layer_modules}
        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(
            lambda module, args, output, name=name: captured[name].append(
                _first_tensor(output).detach().reshape(_first_tensor(output).shape[0], -1).float()))
            for name in self.layer_modules]
        training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(self.inputs), self.batch_size):
                self.model(self.inputs[start:start + self.batch_size].to(self.device))
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(training)
        layers = []
        for name in self.layer_modules:
            if not captured[name]:
                raise UserError(f"layer {name!r} was not called in the model's forward pass")
            layer = torch.cat(captured[name])
            if layer.shape[0] != len(self.inputs):
                raise UserError(f"layer {name!r} gave {layer.shape[0]} rows for {len(self.inputs)} inputs "
                                "(called more than once per forward?)")
            if not bool(torch.isfinite(layer).all()):
                raise UserError(f"layer {name!r} has NaN/inf activations")
            layers.append(layer)
        return layers

    def _measure(self, epoch: int, scalars: Mapping[str, float], layers: list[torch.Tensor] | None = None) -> None:
        started = time.perf_counter()
        layers = layers if layers is not None else self._activations()
        results = stack_results([estimate_layers(layers, self.mi_set, self.estimators)])
        planes = {name: value for result in results for name, value in result.items()}
        values = {key: (float(scalars[key]) if key in scalars else None) for key in RECORDS}
        record = MeasureRecord(epoch, planes, mi_seconds=round(time.perf_counter() - started, 6),
                               **{k: (v if v is None or math.isfinite(v) else None) for k, v in values.items()})
        distance = None
        if self.records:
            last = self.records[-1]["planes"][self.distance_plane]
            now = planes[self.distance_plane]
            distance = plane_distance(np.stack([last["ixt"], last["ity"]], 1),
                                      np.stack([now.ixt.mean(0), now.ity.mean(0)], 1))
        self.next_epoch, decision = self.schedule.decide(epoch, distance)
        record.schedule = {**decision, "next": self.next_epoch}
        event = record.to_json()
        self.records.append(event)
        self.store.sync_curves()
        self.store.append_event(event)
        self.store.write_meta(epochs_done=max(epoch, self.store.meta.get("epochs_done") or 0),
                              measured_epochs=len(self.records))
        self._write_arrays(force=False)

    def step(self, epoch: int, **scalars: float) -> bool:
        """After training epoch ``epoch`` (1-based): record the scalars (losses in nats, accuracies)
        as the run's curves and measure the planes when the schedule says so. Returns True when measured."""
        if self.closed:
            raise UserError("this recorder is closed")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise UserError(f"step(epoch) takes the number of epochs trained so far (>= 1); got {epoch!r}")
        row = {"epoch": epoch, **{k: float(v) for k, v in scalars.items()}}
        for key, value in row.items():
            column = self.curves.setdefault(key, [math.nan] * (len(self.curves["epoch"]) - (key == "epoch")))
            if key != "epoch":
                column.append(value)
        self.curves["epoch"].append(epoch)
        for key, column in self.curves.items():  # a scalar not given this epoch: NaN
            if len(column) < len(self.curves["epoch"]):
                column.append(math.nan)
        self.store.append_curve(row)
        if self.next_epoch is not None and epoch >= self.next_epoch:
            self._measure(epoch, scalars)
            return True
        self.store.write_meta(epochs_done=epoch)
        return False

    # ------------------------------------------------------------------ files
    def _write_arrays(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < 1.0:
            return
        self._last_write = now
        from ibtui.engine.loop import plane_arrays

        self.store.write_arrays(PLANES, plane_arrays(self.records, self.planes, 1))
        self.store.write_arrays(CURVES, {k: np.asarray(v, dtype=np.float64) for k, v in self.curves.items()})

    def close(self, status: str = "done", error: str | None = None) -> None:
        """Write the arrays, mark the run ``status`` and release the directory."""
        if self.closed:
            return
        self.closed = True
        try:
            self._write_arrays(force=True)
            self.store.write_meta(status=status, error=error, updated=utc_stamp())
        finally:
            self.store.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.close("stopped" if issubclass(kind, KeyboardInterrupt) else "failed",
                       None if kind is KeyboardInterrupt else f"{kind.__name__}: {value}")


def _schedule_keys(raw: Mapping[str, Any]) -> bool:
    import dataclasses

    return set(raw) <= {f.name for f in dataclasses.fields(ScheduleConfig)}


def _toml_safe(value: Any) -> Any:
    """Drop None values (TOML has none)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_safe(v) for v in value]
    return value
