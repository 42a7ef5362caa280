"""What a run screen shows, built from engine events (live) or a run directory (replay).

Pure Python (no Textual): the screens only read a :class:`RunView` and call ``apply``.
Every change bumps ``version`` so plots can cache their rendering.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibtui.engine.phases import transition_epochs
from ibtui.progress import Eta
from ibtui.runinfo import ago, clean_info, differing_keys, duration, flatten, parse_stamp, run_label
from ibtui.rundir.reader import (Run, load_run, load_sweep, read_json, read_regular, read_run_meta,
                                 refuse_symlinked_cell, shown_status)
from ibtui.rundir.records import MeasureRecord
from ibtui.rundir.store import CONFIG, META
from ibtui.errors import UserError


GRADIENT_REDRAW = 10  # epochs between redraws of the plane's drift→diffusion marks in a live run
LIVE_STATUSES = ("starting", "running", "paused")  # a run that is still going
RESUMABLE = ("stopped", "failed", "killed")  # `ibtui resume` (u on the run list) continues these


@dataclass
class RunView:
    """The state of one run as the UI sees it. Values in bits; epochs as the engine counts them."""

    title: str = ""
    run_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    plane_names: list[str] = field(default_factory=list)
    # plane → epoch → (ixt per layer, ity per layer)
    planes: dict[str, dict[int, tuple[list[float], list[float]]]] = field(default_factory=dict)
    # ensembles: plane → epoch → (I(X;T) per member per layer, I(T;Y) per member per layer)
    members: dict[str, dict[int, tuple[list[list[float]], list[list[float]]]]] = field(default_factory=dict)
    measures: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch → measure event
    curves: dict[str, list[float]] = field(
        default_factory=lambda: {"epoch": [], "train_loss": [], "train_acc": [], "test_acc": []})
    # re-analyses (``ibtui analyze``): family name → its planes, one per parameter value
    families: dict[str, list[str]] = field(default_factory=dict)
    # gradient statistics (train.gradient_stats): epoch, then per epoch per layer ‖mean‖ and ‖std‖
    grad_epochs: list[int] = field(default_factory=list)
    grad_mean: list[list[float]] = field(default_factory=list)
    grad_std: list[list[float]] = field(default_factory=list)
    status: str = "idle"
    error: str | None = None
    traceback: str | None = None
    epochs_done: int = 0
    epochs_total: int = 0
    log: deque = field(default_factory=lambda: deque(maxlen=500))
    log_count: int = 0  # lines ever logged (the log deque keeps the last 500)
    version: int = 0
    # bumped only by what the plane and schedule plots show (measures, status, analyses, and the
    # gradient marks every GRADIENT_REDRAW epochs), not by every epoch's curves: a live run
    # redraws its plane when it was measured, not at every epoch
    plane_version: int = 0
    started: float | None = None
    schedule: Any = None  # the run's ScheduleConfig, when known: the ETA counts the measurements left from it
    _eta: Eta | None = None
    _rate: tuple[float, int] | None = None  # (time, epoch) of the first epoch event
    _last_epoch_at: float | None = None  # time of the latest epoch event
    _run: Run | None = None  # the run directory being replayed (``load_run``)
    _warned: int = 0  # reader warnings already logged
    _seen: tuple[float, int] | None = None  # a followed run: (monotonic time, epoch) of the newest measure seen
    shown_plane: str | None = None  # the plane the screen shows: the log's lines are about it

    # ------------------------------------------------------------------ derived
    @property
    def epochs(self) -> list[int]:
        """Measured epochs, sorted (delta_exact bisection measures out of order)."""
        return sorted(self.measures)

    def _bits(self, key: str) -> float | None:
        value = self.meta.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        return float(value) if ok else None

    @property
    def h_x(self) -> float | None:
        """H(X) in bits from meta.json (None when absent or not a sane number)."""
        return self._bits("h_x")

    @property
    def h_y(self) -> float | None:
        return self._bits("h_y")

    @property
    def running(self) -> bool:
        return self.status in LIVE_STATUSES

    def rate(self) -> float | None:
        """Epochs per second from the first to the latest epoch event (live runs only): it holds
        still once the run has ended or while it is paused."""
        if self._rate is None or self._last_epoch_at is None or self.epochs_done <= self._rate[1]:
            return None
        elapsed = self._last_epoch_at - self._rate[0]
        return (self.epochs_done - self._rate[1]) / elapsed if elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left in a live run by its schedule (``ibtui.progress.Eta``: training per epoch and
        measurements left × their cost, from the engine's timings); None when not running or unknown."""
        if not self.running or self._eta is None:
            return None
        return self._eta.seconds()

    @property
    def info(self) -> dict[str, Any]:
        """name, tags, note and overrides of the preset (``ibtui.runinfo.clean_info``: well-formed)."""
        return clean_info(self.meta)

    @property
    def label(self) -> str:
        """``quick · relu · 300 epochs``: the preset and what the run overrode."""
        return run_label(str(self.meta.get("preset") or self.title or "?"), self.info["overrides"])

    @property
    def heading(self) -> str:
        """The run's name (else its id) and label: ``baseline · quick · relu · 300 epochs``."""
        first = self.info["name"] or self.title
        return f"{first} · {self.label}" if self.meta else first

    def trim_to_last_measure(self) -> None:
        """Drop the curves beyond the last measured epoch (a resume trains them again)."""
        last = max(self.measures, default=0)
        keep = [i for i, e in enumerate(self.curves["epoch"]) if e <= last]
        self.curves = {k: [v[i] for i in keep if i < len(v)] for k, v in self.curves.items()}
        self.grad_epochs = [e for e in self.grad_epochs if e <= last]
        self.grad_mean, self.grad_std = self.grad_mean[:len(self.grad_epochs)], self.grad_std[:len(self.grad_epochs)]
        self.epochs_done = last
        self.version += 1
        self.plane_version += 1

    def _describe(self) -> None:
        """The run's label, name, tags and note in the log."""
        info = self.info
        self.add_log(f"settings: {self.label}")
        if info["name"]:
            self.add_log(f"name: {info['name']}")
        if info["tags"]:
            self.add_log(f"tags: {', '.join(info['tags'])}")
        if info["note"]:
            self.add_log(f"note: {info['note']}")

    def trajectory(self, plane: str, layer: int) -> tuple[list[int], list[float], list[float]]:
        """(epochs, I(X;T), I(T;Y)) of one layer on one plane, in epoch order."""
        points = self.planes.get(plane, {})
        epochs = sorted(points)
        return epochs, [points[e][0][layer] for e in epochs], [points[e][1][layer] for e in epochs]

    @property
    def n_members(self) -> int:
        """Networks in the run's ensemble (1 for a single network)."""
        seeds = self.meta.get("seeds")
        return len(seeds) if isinstance(seeds, list) and seeds else 1

    def spread(self, plane: str, epoch: int) -> tuple[list[float], list[float]] | None:
        """Standard deviation over ensemble members of I(X;T) and I(T;Y) per layer (bits); None
        for a single network or an epoch without member values."""
        values = self.members.get(plane, {}).get(epoch)
        if values is None or len(values[0]) < 2:
            return None
        return [statistics.stdev(col) for col in zip(*values[0])], [statistics.stdev(col) for col in zip(*values[1])]

    def _add_gradients(self, epoch: int, mean: list, std: list) -> None:
        def number(v: Any) -> float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            return float(v) if ok else math.nan

        if len(mean) == len(std) and (not self.grad_mean or len(mean) == len(self.grad_mean[0])):
            self.grad_epochs.append(epoch)
            self.grad_mean.append([number(v) for v in mean])
            self.grad_std.append([number(v) for v in std])

    def gradient_noise_floor(self) -> float | None:
        """1/sqrt(B − 1): the gradient SNR of a minibatch mean when the gradients carry no signal
        (B, the batch size, from meta.json); None when unknown."""
        batch = self.meta.get("batch_size")
        ok = isinstance(batch, int) and not isinstance(batch, bool) and batch > 1
        return 1.0 / math.sqrt(batch - 1) if ok else None

    def transitions(self) -> list[int | None]:
        """Per layer, the drift→diffusion epoch of the gradient statistics (``ibtui.engine.phases``);
        empty when the run records none."""
        if not self.grad_epochs:
            return []
        return transition_epochs(self.grad_epochs, np.asarray(self.grad_mean), np.asarray(self.grad_std))

    def schedule_points(self) -> tuple[list[int], list[int]]:
        """(measured epoch, skip until the next measurement) for the schedule plot."""
        epochs = self.epochs
        return epochs, [b - a for a, b in zip(epochs, epochs[1:])]

    def at_or_before(self, epoch: int) -> int | None:
        """The last measured epoch ≤ ``epoch`` (the replay cursor snaps to it)."""
        best = None
        for e in self.epochs:
            if e <= epoch:
                best = e
        return best

    # ------------------------------------------------------------------ events
    def add_log(self, line: str) -> None:
        self.log.append(line)
        self.log_count += 1
        self.version += 1

    def new_log_lines(self, seen: int) -> list[str]:
        """Lines logged after the first ``seen`` ones (as many as the deque still holds)."""
        fresh = self.log_count - seen
        return list(self.log)[-fresh:] if fresh > 0 else []

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one engine/worker event into the view."""
        kind = event.get("type")
        if kind in ("start", "epoch", "measure"):
            if self._eta is None:
                self._eta = Eta(self.epochs_total, self.schedule)
                self._eta.last_measured = max(self.measures, default=-1)  # a resumed run's are done
            self._eta.apply(event)
        if kind == "start":
            self.run_dir = event.get("run_dir")
            self._set_meta(event.get("meta", {}))
            self.status = "running"
            self.started = time.monotonic()
            self.add_log(f"run started: {self.run_dir} on {self.meta.get('device')}")
            self._describe()
        elif kind == "epoch":
            self.epochs_done = int(event["epoch"])
            self.epochs_total = int(event.get("epochs", self.epochs_total))
            self._last_epoch_at = time.monotonic()
            if self._rate is None:
                self._rate = (self._last_epoch_at, self.epochs_done)
            for key in self.curves:
                value = event.get(key)
                self.curves[key].append(math.nan if value is None else float(value))
            if isinstance(event.get("grad_mean"), list) and isinstance(event.get("grad_std"), list):
                self._add_gradients(self.epochs_done, event["grad_mean"], event["grad_std"])
        elif kind == "measure":
            self._add_measure(event)
        elif kind == "end":
            self.status = event.get("status", "done")
            self.error = event.get("error") or self.error
            summary = event.get("summary") or {}
            self.epochs_done = summary.get("epochs_done", self.epochs_done)
            self.add_log(f"run {self.status}" + (f": {self.error}" if self.error else ""))
        elif kind == "error":
            self.status = "failed"
            self.error = event.get("message")
            self.traceback = event.get("traceback")
            self.add_log(f"error: {self.error}")
        elif kind == "exit":
            if self.running:
                self.status = "stopped"
        elif kind == "crashed":
            self.status = "failed"
            self.error = event.get("message", "the worker process died")
            self.add_log(f"error: {self.error}")
        elif kind == "log":
            self.add_log(str(event.get("message", "")))
        self.version += 1
        if kind not in ("epoch", "log") or (self.grad_epochs and self.grad_epochs[-1] == self.epochs_done
                                             and self.epochs_done % GRADIENT_REDRAW == 0):
            self.plane_version += 1

    def _set_meta(self, meta: dict[str, Any]) -> None:
        self.meta = dict(meta)
        self.layers = [str(x) for x in meta.get("layers", [])]
        self.plane_names = [str(x) for x in meta.get("planes", [])]
        self.epochs_total = int(meta.get("epochs_total") or 0)
        self.title = str(meta.get("id") or meta.get("preset") or self.title)

    def _add_measure(self, event: dict[str, Any]) -> None:
        """Add one measured epoch from a live event (parsed and validated as the reader does:
        ``MeasureRecord.from_json``); ValueError for a malformed one (nothing added)."""
        width = len(self.layers) or _width(event)
        self._add_record(MeasureRecord.from_json(event, width))

    def _add_record(self, record: MeasureRecord) -> None:
        """Fold one measured epoch into the view; ValueError when its values are not finite."""
        epoch = record.epoch
        for name, values in record.planes.items():
            if not (np.isfinite(values.ixt).all() and np.isfinite(values.ity).all()):
                raise ValueError(f"plane {name[:60]!r} of epoch {epoch} holds missing or infinite values")
        self.measures[epoch] = record.to_json()
        for name, values in record.planes.items():
            self.planes.setdefault(name, {})[epoch] = (values.ixt.mean(0).tolist(), values.ity.mean(0).tolist())
            if values.members > 1:
                self.members.setdefault(name, {})[epoch] = (values.ixt.tolist(), values.ity.tolist())
            if name not in self.plane_names:
                self.plane_names.append(name)
        if not self.layers and self.planes:
            n = len(next(iter(self.planes.values()))[epoch][0])
            self.layers = [f"layer {i + 1}" for i in range(n)]
        self.epochs_done = max(self.epochs_done, epoch)
        shown = self.shown_plane if self.shown_plane in record.planes else None
        shown = shown or (self.plane_names[0] if self.plane_names else None)
        if shown and shown in self.planes and epoch in self.planes[shown]:
            self.add_log(measure_line(self, shown, epoch))

    # ------------------------------------------------------------------ replay
    @classmethod
    def from_run_dir(cls, path: str | Path) -> "RunView":
        """Load a run directory for replay through the one reader (``load_run``: validated). A
        foreign or malformed directory is a UserError."""
        run = load_run(path)
        view = cls(run_dir=str(run.path))
        view._run = run
        view._set_meta(run.meta)
        view.status = run.status
        view.error = run.meta.get("error")
        view._describe()
        if view.status in RESUMABLE:
            view.add_log(f"this run is {view.status}: u on the run list resumes it (or ibtui resume {run.path})")
        try:
            view.schedule = run.settings().schedule  # a run still being written: its ETA by schedule
        except (UserError, OSError):  # no or a malformed config.toml: no ETA (warned below)
            pass
        for record in run.records:
            view._fold(record)
        view._load_curves()
        view.load_analyses()
        if view.running:  # followed from here on: the ETA times the measurements seen arrive
            view._seen = (time.monotonic(), max(view.measures, default=-1))
        done = run.meta.get("epochs_done")
        if isinstance(done, int):
            view.epochs_done = max(view.epochs_done, done)
        if not (run.path / CONFIG).is_file():
            view.add_log(f"warning: {CONFIG} is missing")
        view._warn()
        return view

    def _fold(self, record: MeasureRecord) -> None:
        try:
            self._add_record(record)
        except ValueError as exc:
            self.add_log(f"warning: skipped epoch {record.epoch} ({exc})")

    def _warn(self) -> None:
        """Move the reader's new warnings into the log."""
        if self._run is not None:
            for warning in self._run.warnings[self._warned:]:
                self.add_log(f"warning: {warning}")
            self._warned = len(self._run.warnings)

    def follow(self) -> int:
        """Read events appended since the last call (a run still being written). Returns how many."""
        if self._run is None:
            return 0
        try:
            fresh = self._run.poll()
        except (OSError, UserError):
            return 0
        for record in fresh:
            self._fold(record)
        self._warn()
        if fresh:
            self._time_followed(fresh)
            self.version += 1
            self.plane_version += 1
        return len(fresh)

    def _time_followed(self, fresh: list[MeasureRecord]) -> None:
        """The ETA of a run followed from disk (written by another process: its epoch events and
        their timings are not on disk): the measurements feed the schedule's count and the
        estimators' seconds, and the training seconds per epoch are the wall time between two
        measurements seen arrive, less the estimators' seconds, over the epochs trained between them
        (to within the polling interval)."""
        now, newest = time.monotonic(), max(record.epoch for record in fresh)
        if self._eta is None:
            self._eta = Eta(self.epochs_total, self.schedule)
        for record in sorted(fresh, key=lambda r: r.epoch):
            self._eta.apply(record.to_json())
        if self._seen is not None and newest > self._seen[1]:
            estimators = sum(record.mi_seconds or 0.0 for record in fresh)
            wall = now - self._seen[0] - estimators
            if wall > 0:
                self._eta.apply({"type": "epoch", "epoch": newest, "seconds": wall / (newest - self._seen[1])})
        self._seen = (now, max(newest, self._seen[1] if self._seen else newest))

    def refresh_meta(self) -> bool:
        """Re-read meta.json (status of a run still being written); True when the status changed."""
        if self._run is None:
            return False
        self._run.refresh()
        status = self._run.status
        if status == self.status:
            return False
        self.status = status
        self.error = self._run.meta.get("error")
        done = self._run.meta.get("epochs_done")
        if isinstance(done, int):
            self.epochs_done = done
        self.version += 1
        self.plane_version += 1
        return True

    def load_analyses(self) -> int:
        """Add the planes of the run's stored analyses (``analysis/``, through the reader); returns
        how many families. Each family (an estimator with one parameter swept) becomes planes named
        ``<plane>[<param>=<value>]``, listed after the run's own. A malformed analysis is skipped
        with a warning in the log."""
        if self._run is None:
            return 0
        for analysis in self._run.analyses:
            for plane, data in analysis.planes.items():
                epochs = [int(e) for e in data.epochs]
                mean_ixt, mean_ity = data.ixt_mean, data.ity_mean
                self.planes[plane] = {e: (mean_ixt[i].tolist(), mean_ity[i].tolist()) for i, e in enumerate(epochs)}
                if data.members > 1:
                    self.members[plane] = {e: (data.members_ixt[i].tolist(), data.members_ity[i].tolist())
                                           for i, e in enumerate(epochs)}
                if plane not in self.plane_names:
                    self.plane_names.append(plane)
            self.families[analysis.name] = list(analysis.planes)
            self.version += 1
            self.plane_version += 1
        self._warn()
        return len(self.families)

    def family_planes(self, family: str) -> list[str]:
        """The planes of an analysis family that hold points, in the family's order."""
        return [p for p in self.families.get(family, []) if self.planes.get(p)]

    def family_of(self, plane: str) -> str | None:
        """The analysis family a plane belongs to (None for the run's own planes)."""
        return next((name for name, planes in self.families.items() if plane in planes), None)

    def _load_curves(self) -> None:
        if self._run is None:
            return
        arrays = self._run.curves
        if arrays:
            self.curves = {k: [float(v) for v in arrays[k]] for k in self.curves if k in arrays}
            for k in ("epoch", "train_loss", "train_acc", "test_acc"):
                self.curves.setdefault(k, [])
            layers = sorted(int(k.split(".", 1)[1]) for k in arrays if k.startswith("grad_mean.")
                            and k.split(".", 1)[1].isdigit())
            if layers and layers == list(range(len(layers))) and all(f"grad_std.{i}" in arrays for i in layers):
                mean = np.stack([arrays[f"grad_mean.{i}"] for i in layers], axis=1)
                std = np.stack([arrays[f"grad_std.{i}"] for i in layers], axis=1)
                self.grad_epochs = [int(e) for e in arrays["epoch"]]
                self.grad_mean, self.grad_std = mean.tolist(), std.tolist()
        self._warn()


def measure_line(view: RunView, plane: str, epoch: int) -> str:
    """The log's line for a measured epoch, about the plane on screen: its name in words and the
    last hidden layer's numbers in bits."""
    ixt, ity = view.planes[plane][epoch]
    layer = len(ixt) - 2 if len(ixt) > 1 else 0
    name = view.layers[layer] if len(view.layers) == len(ixt) else f"layer {layer + 1}"
    return (f"epoch {epoch} · {plane} ({plane_words(plane)}): {name} I(X;T) {ixt[layer]:.2f} bits, "
            f"I(T;Y) {ity[layer]:.2f} bits")


def _width(event: dict[str, Any]) -> int:
    """Layers of a live event's first plane (before the run's meta names them)."""
    planes = event.get("planes") if isinstance(event, dict) else None
    first = next(iter(planes.values()), None) if isinstance(planes, dict) and planes else None
    ixt = first.get("ixt") if isinstance(first, dict) else None
    return len(ixt) if isinstance(ixt, list) else 0


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Run (and sweep) directories under ``runs_dir``, newest first: id, path, status, preset,
    created, epochs (a sweep's status counts its done cells)."""
    root = Path(runs_dir)
    rows = []
    if not root.is_dir():
        return rows
    for path in root.iterdir():
        if is_sweep_dir(path):
            rows.append(sweep_row(path))
            continue
        if not (path / META).is_file():
            continue
        try:
            meta = read_run_meta(path)
        except UserError:
            rows.append({"id": path.name, "path": str(path), "status": "unreadable", "preset": "?",
                         "created": "", "epochs": ""})
            continue
        done, total = meta.get("epochs_done"), meta.get("epochs_total")
        info = clean_info(meta)
        wall = meta.get("wall_seconds")
        wall = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) and math.isfinite(wall) \
            and wall >= 0 else None
        rows.append({
            "id": path.name, "path": str(path), "status": shown_status(path, meta),
            "preset": meta.get("preset") or "?", "created": meta.get("created") or "",
            "epochs": f"{'?' if done is None else done}/{'?' if total is None else total}",
            "name": info["name"] or "", "tags": info["tags"], "note": info["note"] or "",
            "label": run_label(meta.get("preset") or "?", info["overrides"]),
            "started": parse_stamp(meta.get("created")), "ended": parse_stamp(meta.get("updated")),
            "wall_seconds": wall, "config": run_config(path),
        })
    return sorted(rows, key=lambda r: (r["created"], r["id"]), reverse=True)


_configs: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def run_config(path: Path) -> dict[str, Any]:
    """A run's config.toml flattened (``section.key`` → value; {} when unreadable), cached while the
    file is unchanged: the run list reads it for its columns every time it refreshes."""
    from ibtui.rundir.reader import tomllib
    from ibtui.rundir.store import CONFIG as NAME

    try:
        stat = (path / NAME).stat()
    except OSError:
        return {}
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _configs.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        flat = flatten(tomllib.loads(read_regular(path, NAME).decode("utf-8")))
    except (OSError, UserError, ValueError, RecursionError):
        flat = {}
    _configs[str(path)] = (key, flat)
    return flat


def filter_rows(rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """The rows matching every word of ``query`` (case-insensitive) in their name, id, preset, label,
    tags, status or note."""
    words = query.lower().split()
    if not words:
        return rows

    def text(row: dict[str, Any]) -> str:
        return " ".join([row.get("name", ""), row["id"], row["preset"], row.get("label", ""),
                         " ".join(row.get("tags", [])), row["status"], row.get("note", "")]).lower()

    return [r for r in rows if all(w in text(r) for w in words)]


MAX_DIFF_COLUMNS = 6


def short(value: Any, limit: int = 16) -> str:
    """A config value in a table cell."""
    if isinstance(value, list):
        text = ",".join(short(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def run_table(rows: list[dict[str, Any]], now: float | None = None) -> tuple[list[str], list[list[str]]]:
    """The run list as a table: headers and plain-text cells (the screen escapes nothing: it shows
    them as text). Columns: run (its name, else its id), status, progress (epochs done/total), preset,
    the config keys that differ between the listed runs (at most ``MAX_DIFF_COLUMNS``; an estimator
    that some runs lack is one yes/no column), tags, started (relative), took."""
    now = time.time() if now is None else now
    keys = differing_keys([r["config"] for r in rows if r.get("config")])
    estimators = {k for k in keys if k.startswith("estimators.") and k.count(".") == 1}
    # an estimator one run has and another lacks: one column (yes/no), not one per parameter
    keys = [k for k in keys if not (k.count(".") == 2 and k.rsplit(".", 1)[0] in estimators)][:MAX_DIFF_COLUMNS]
    ends = [k.rsplit(".", 1)[-1] for k in keys]
    headers = ["run", "status", "progress", "preset",
               *(end if ends.count(end) == 1 else key for key, end in zip(keys, ends)), "tags", "started", "took"]
    cells = []
    for r in rows:
        started = r.get("started")
        if r["status"] in LIVE_STATUSES and started is not None:
            took = duration(now - started)
        elif r.get("wall_seconds") is not None:
            took = duration(r["wall_seconds"])
        elif started is not None and r.get("ended") is not None:
            took = duration(r["ended"] - started)
        else:
            took = ""
        config = r.get("config") or {}
        cells.append([r.get("name") or r["id"], r["status"], r["epochs"], r["preset"],
                      *(("yes" if k in config else "no") if k in estimators else short(config[k]) if k in config
                        else "" for k in keys),
                      ",".join(r.get("tags", [])), ago(now - started) if started is not None else r["created"], took])
    return headers, cells


def is_sweep_dir(path: str | Path) -> bool:
    """True for a sweep directory (``ibtui sweep``: it holds sweep.json and one run per cell)."""
    from ibtui.engine.sweep import SWEEP

    return (Path(path) / SWEEP).is_file()


@dataclass
class SweepCell:
    """One cell of a sweep as the UI sees it; ``view`` is its run, loaded once it has started."""

    name: str
    overrides: dict[str, Any]
    run_dir: Path
    status: str = "pending"
    attempts: int | None = None
    error: str | None = None
    test_acc: float | None = None
    view: RunView | None = None


@dataclass
class SweepView:
    """A sweep directory followed from disk: cells, their statuses and their runs (no Textual)."""

    root: Path
    sweep_id: str = ""
    preset: str = ""
    grid: list[tuple[str, list[str]]] = field(default_factory=list)
    cells: list[SweepCell] = field(default_factory=list)
    version: int = 0

    @classmethod
    def from_dir(cls, path: str | Path) -> "SweepView":
        """Load a sweep directory through the one reader (``load_sweep``). A foreign or corrupt one is a UserError."""
        sweep = load_sweep(path)
        cells = [SweepCell(cell.name, cell.overrides, cell.path) for cell in sweep.cells]
        view = cls(root=sweep.path, sweep_id=sweep.id, preset=sweep.preset, grid=sweep.grid, cells=cells)
        view.refresh()
        return view

    @property
    def plane_names(self) -> list[str]:
        for cell in self.cells:
            if cell.view is not None and cell.view.plane_names:
                return cell.view.plane_names
        return []

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.cells:
            out[cell.status] = out.get(cell.status, 0) + 1
        return out

    def refresh(self) -> bool:
        """Re-read every cell's status (and the summary's attempts and errors); follow running
        runs. Returns True when anything changed (and bumps ``version``)."""
        from ibtui.engine.sweep import SUMMARY_JSON

        before = [(c.status, c.attempts, c.error, c.test_acc, c.view.version if c.view else -1) for c in self.cells]
        try:
            summary = {c["name"]: c for c in read_json(self.root, SUMMARY_JSON)["cells"] if isinstance(c, dict)}
        except (OSError, UserError, KeyError, TypeError):
            summary = {}
        for cell in self.cells:
            row = summary.get(cell.name, {})
            if cell.view is None and (cell.run_dir / META).is_file():
                try:
                    refuse_symlinked_cell(cell.run_dir)
                    cell.view = RunView.from_run_dir(cell.run_dir)
                    cell.view.title = cell.name
                except UserError as exc:
                    cell.status, cell.error = "unreadable", str(exc)
                    continue
            elif cell.view is not None:
                cell.view.follow()
                cell.view.refresh_meta()
            if cell.view is not None:
                cell.status = cell.view.status
                cell.error = cell.view.error
                measures = cell.view.measures
                last = measures[max(measures)] if measures else {}
                acc = last.get("test_acc")
                cell.test_acc = float(acc) if isinstance(acc, (int, float)) and math.isfinite(acc) else None
            if row.get("status") == "failed":  # retries exhausted: the sweep's word is final
                cell.status, cell.error = "failed", row.get("error") or cell.error
            cell.attempts = row.get("attempts") if isinstance(row.get("attempts"), int) else None
        after = [(c.status, c.attempts, c.error, c.test_acc, c.view.version if c.view else -1) for c in self.cells]
        if after != before:
            self.version += 1
            return True
        return False

    def peak_and_final(self, cell: SweepCell, plane: str) -> tuple[float | None, float | None]:
        """Peak and latest I(X;T) (bits) of ``plane``'s last hidden layer in ``cell``'s run; for an
        ensemble the mean over members of each member's own peak and latest value (as the sweep's
        summaries: ``ibtui.engine.summary``)."""
        view = cell.view
        if view is None or plane not in view.planes or not view.planes[plane]:
            return None, None
        layer = max(0, len(view.layers) - 2)
        members = view.members.get(plane)
        epochs = sorted(view.planes[plane])
        if members and all(e in members for e in epochs):
            values = np.asarray([[row[layer] for row in members[e][0]] for e in epochs], dtype=np.float64)  # (E, S)
            if np.isfinite(values).all():
                return float(values.max(axis=0).mean()), float(values[-1].mean())
        _, ixt, _ = view.trajectory(plane, layer)
        values = [v for v in ixt if isinstance(v, float) and math.isfinite(v)]
        return (max(values), values[-1]) if values else (None, None)


def sweep_row(path: Path) -> dict[str, Any]:
    """A sweep's line in the list of runs: its cells' statuses from their meta.json only (the
    runs themselves are loaded when the sweep is opened)."""
    try:
        sweep = load_sweep(path)
        names = [cell.name for cell in sweep.cells]
    except UserError:
        return {"id": path.name, "path": str(path), "status": "unreadable", "preset": "?", "created": "", "epochs": ""}
    spec = sweep.spec
    done = 0
    for name in names:
        try:
            refuse_symlinked_cell(path / name)
            done += read_run_meta(path / name)["status"] == "done"
        except UserError:
            pass
    return {"id": path.name, "path": str(path), "status": f"sweep {done}/{len(names)} done",
            "preset": str(spec.get("preset", "?")), "created": str(spec.get("created", "")),
            "epochs": f"{len(names)} cells"}


# ---------------------------------------------------------------------------- what a plane shows
# The reader's choices of how to look at a plane (layers shown, zoom, log epochs): state kept
# outside the widgets, changed by pure functions the screens call.


@dataclass(frozen=True)
class PlaneOptions:
    """Which layers are hidden (indices), the zoomed axis ranges in bits (None: the whole plane) and
    whether the curves' epoch axis is logarithmic."""

    hidden: frozenset = frozenset()
    x: tuple[float, float] | None = None
    y: tuple[float, float] | None = None
    log_epochs: bool = False

    @property
    def zoomed(self) -> bool:
        return self.x is not None or self.y is not None

    def visible(self, n_layers: int) -> list[int]:
        return [i for i in range(n_layers) if i not in self.hidden]


def toggle_layer(options: PlaneOptions, layer: int, n_layers: int) -> PlaneOptions:
    """Hide ``layer`` or show it again; the last visible layer stays (an empty plane says nothing),
    and a layer the run does not have changes nothing."""
    if not 0 <= layer < n_layers:
        return options
    hidden = set(options.hidden) ^ {layer}
    if len([i for i in range(n_layers) if i not in hidden]) == 0:
        return options
    return PlaneOptions(frozenset(hidden), options.x, options.y, options.log_epochs)


def _axis(current: tuple[float, float] | None, full: float) -> tuple[float, float]:
    return current if current is not None else (0.0, full)


def zoom(options: PlaneOptions, full_x: float, full_y: float, factor: float) -> PlaneOptions:
    """Zoom by ``factor`` (0.5: twice as close; 2: twice as far) about the centre of what is shown
    now; zooming out to the whole plane (or beyond) resets it."""
    ranges = []
    for current, full in ((options.x, full_x), (options.y, full_y)):
        low, high = _axis(current, full)
        centre, half = (low + high) / 2, (high - low) * factor / 2
        ranges.append((centre - half, centre + half))
    if all(high - low >= full - 1e-12 for (low, high), full in zip(ranges, (full_x, full_y))):
        return PlaneOptions(options.hidden, None, None, options.log_epochs)
    return PlaneOptions(options.hidden, ranges[0], ranges[1], options.log_epochs)


def pan(options: PlaneOptions, full_x: float, full_y: float, dx: float, dy: float) -> PlaneOptions:
    """Move a zoomed view by ``dx``, ``dy`` of its own width and height (nothing when not zoomed)."""
    if not options.zoomed:
        return options
    (x0, x1), (y0, y1) = _axis(options.x, full_x), _axis(options.y, full_y)
    sx, sy = (x1 - x0) * dx, (y1 - y0) * dy
    return PlaneOptions(options.hidden, (x0 + sx, x1 + sx), (y0 + sy, y1 + sy), options.log_epochs)


def reset_zoom(options: PlaneOptions) -> PlaneOptions:
    return PlaneOptions(options.hidden, None, None, options.log_epochs)


def toggle_log_epochs(options: PlaneOptions) -> PlaneOptions:
    return PlaneOptions(options.hidden, options.x, options.y, not options.log_epochs)


def parse_axis_range(text: str, options: PlaneOptions) -> PlaneOptions:
    """Axis ranges typed by the reader, in bits: ``x=0:6 y=0:1`` (either or both, spaces or commas
    between; ``..`` works for ``:``); an empty text or ``reset`` shows the whole plane. ValueError
    with a message for anything else."""
    text = text.strip().lower()
    if text in ("", "reset", "all", "full"):
        return reset_zoom(options)
    ranges: dict[str, tuple[float, float]] = {}
    for part in text.replace(",", " ").split():
        axis, eq, span = part.partition("=")
        low, sep, high = span.replace("..", ":").partition(":")
        if axis not in ("x", "y") or not eq or not sep:
            raise ValueError(f"{part!r}: write x=LOW:HIGH and/or y=LOW:HIGH (bits), e.g. x=0:6 y=0:1")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            raise ValueError(f"{part!r}: LOW and HIGH must be numbers (bits)") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{part!r}: needs finite LOW < HIGH")
        ranges[axis] = (lo, hi)
    if not ranges:
        raise ValueError("write x=LOW:HIGH and/or y=LOW:HIGH (bits), e.g. x=0:6 y=0:1")
    return PlaneOptions(options.hidden, ranges.get("x", options.x), ranges.get("y", options.y), options.log_epochs)


PLANE_WORDS = {
    "binning": "binning by bin size",
    "binning_fixed": "binning into equal-width bins",
    "binning_adaptive": "binning into equal-mass bins",
    "discrete": "exact plug-in (discrete layers)",
    "kde_upper": "KDE upper bound",
    "kde_lower": "KDE lower bound",
    "noisy_mc": "noisy network, Monte Carlo",
    "gaussian": "Gaussian (log-det)",
    "ksg": "k-nearest neighbours (KSG)",
    "lga": "local Gaussian",
    "gae": "geometric adaptive",
    "infonce": "InfoNCE lower bound",
}


def plane_words(name: str) -> str:
    """A plane's name in words for the log and the status: ``binning_fixed`` is "binning into
    equal-width bins", ``binning~sgd`` adds "weights as if random (SGD)", an analysis
    ``binning_fixed[bins=8]`` adds "re-analysis bins=8"."""
    base, bracket, rest = name.partition("[")
    base, tilde, pool = base.partition("~")
    words = PLANE_WORDS.get(base, base)
    if tilde:
        words += f", weights as if random ({pool or 'pooled'})"
    if bracket:
        words += f", re-analysis {rest.rstrip(']')}"
    return words


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"activation": "relu"}}`` → ``{"model.activation": "relu"}`` (lists kept whole)."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten_config(value, name) if isinstance(value, dict) else {name: value})
    return out


IGNORED_IN_DIFF = ("description", "store.runs_dir")


def config_diff(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The configuration keys whose values differ between runs (dotted names, in the first run's
    order, then the others'), each with every run's value (None where a run lacks the key). The
    description and where the runs were stored are left out."""
    flat = [flatten_config(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return {k: [f.get(k) for f in flat] for k in keys
            if k not in IGNORED_IN_DIFF and len({repr(f.get(k)) for f in flat}) > 1}


def view_config(view: RunView) -> dict[str, Any]:
    """A replayed run's resolved configuration (config.toml), or {} when it has none or it is unreadable."""
    if view._run is None:
        return {}
    try:
        return view._run.config
    except (OSError, UserError):
        return {}
