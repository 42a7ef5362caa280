"""What a run screen shows, built from engine events (live) or a run directory (replay).

Pure Python (no Textual): the screens only read a :class:`RunView` and call ``apply``.
Every change bumps ``version`` so plots can cache their rendering.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibtui.engine.phases import transition_epochs
from ibtui.engine.store import CONFIG, CURVES, EVENTS, META, read_meta, read_npz, run_file
from ibtui.errors import UserError


GRADIENT_REDRAW = 10  # epochs between redraws of the plane's drift→diffusion marks in a live run
LIVE_STATUSES = ("starting", "running", "paused")  # a run that is still going


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
    _rate: tuple[float, int] | None = None  # (time, epoch) of the first epoch event
    _last_epoch_at: float | None = None  # time of the latest epoch event
    _offset: int = 0  # bytes of events.jsonl already read (replay follow)

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
        rate = self.rate()
        if not rate or not self.running:
            return None
        return max(0.0, (self.epochs_total - self.epochs_done) / rate)

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
        if kind == "start":
            self.run_dir = event.get("run_dir")
            self._set_meta(event.get("meta", {}))
            self.status = "running"
            self.started = time.monotonic()
            self.add_log(f"run started: {self.run_dir} on {self.meta.get('device')}")
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
        """Add one measured epoch; ValueError/TypeError/KeyError for a malformed one (nothing added)."""
        epoch = event["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**53:
            raise ValueError(f"bad epoch {epoch!r}")
        width = len(self.layers) or None
        parsed, members = {}, {}
        for name, plane in event["planes"].items():
            ixt, ity = [float(v) for v in plane["ixt"]], [float(v) for v in plane["ity"]]
            width = width or len(ixt)
            if not (len(ixt) == len(ity) == width) or not all(map(math.isfinite, ixt + ity)):
                raise ValueError(f"plane {name!r} of epoch {epoch} is malformed")
            parsed[str(name)] = (ixt, ity)
            if "ixt_seeds" in plane:
                seeds_ixt = [[float(v) for v in row] for row in plane["ixt_seeds"]]
                seeds_ity = [[float(v) for v in row] for row in plane["ity_seeds"]]
                if not (len(seeds_ixt) == len(seeds_ity) >= 1 and all(
                        len(row) == width and all(map(math.isfinite, row)) for row in seeds_ixt + seeds_ity)):
                    raise ValueError(f"plane {name!r} of epoch {epoch} has malformed member values")
                members[str(name)] = (seeds_ixt, seeds_ity)
        self.measures[epoch] = event
        for name, values in members.items():
            self.members.setdefault(name, {})[epoch] = values
        for name, values in parsed.items():
            self.planes.setdefault(name, {})[epoch] = values
            if name not in self.plane_names:
                self.plane_names.append(name)
        if not self.layers and self.planes:
            n = len(next(iter(self.planes.values()))[epoch][0])
            self.layers = [f"layer {i + 1}" for i in range(n)]
        self.epochs_done = max(self.epochs_done, epoch)
        schedule = event.get("schedule") if isinstance(event.get("schedule"), dict) else {}
        best = self.plane_names[0] if self.plane_names else None
        if best and best in self.planes:
            ixt, ity = self.planes[best][epoch]
            self.add_log(f"epoch {epoch}: {best} last hidden I(X;T)={ixt[-2 if len(ixt) > 1 else -1]:.2f} "
                         f"I(T;Y)={ity[-2 if len(ity) > 1 else -1]:.2f} · {schedule.get('decision', '')}")

    # ------------------------------------------------------------------ replay
    @classmethod
    def from_run_dir(cls, path: str | Path) -> "RunView":
        """Load a run directory for replay. A foreign or corrupt directory is a UserError."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path} is not a directory")
        if not (path / META).is_file() or not (path / EVENTS).exists():
            raise UserError(f"{path} is not an ibtui run directory (needs {META} and {EVENTS})")
        meta = read_meta(path)
        view = cls(run_dir=str(path))
        try:
            view._set_meta(meta)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UserError(f"{path / META} has unexpected content: {exc}") from None
        view.status = str(meta.get("status", "unknown"))
        view.error = None if meta.get("error") is None else str(meta.get("error"))
        view.follow()
        view._load_curves()
        view.load_analyses()
        done = meta.get("epochs_done")
        if isinstance(done, int) and not isinstance(done, bool):
            view.epochs_done = max(view.epochs_done, done)
        if not (path / CONFIG).is_file():
            view.add_log(f"warning: {CONFIG} is missing")
        return view

    def follow(self) -> int:
        """Read events appended since the last call (a run still being written). Returns how many."""
        if self.run_dir is None:
            return 0
        try:
            path = run_file(self.run_dir, EVENTS)
            with open(path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except (OSError, UserError):
            return 0
        end = data.rfind(b"\n") + 1  # only complete lines; a torn tail waits for its newline
        count = 0
        for raw in data[:end].splitlines():
            try:
                event = json.loads(raw)
                if isinstance(event, dict) and "epoch" in event and isinstance(event.get("planes"), dict):
                    self._add_measure(event)
                    count += 1
            except (ValueError, TypeError, KeyError, IndexError):
                self.add_log("warning: skipped a corrupt line in events.jsonl")
        self._offset += end
        if count:
            self.version += 1
            self.plane_version += 1
        return count

    def refresh_meta(self) -> bool:
        """Re-read meta.json (status of a run still being written); True when the status changed."""
        if self.run_dir is None:
            return False
        try:
            meta = read_meta(Path(self.run_dir))
        except UserError:
            return False
        if meta.get("status") == self.status:
            return False
        self.status = str(meta.get("status"))
        self.error = None if meta.get("error") is None else str(meta.get("error"))
        done = meta.get("epochs_done")
        if isinstance(done, int) and not isinstance(done, bool):
            self.epochs_done = done
        self.version += 1
        self.plane_version += 1
        return True

    def load_analyses(self) -> int:
        """Add the planes of the run's stored analyses (``analysis/``); returns how many families.

        Each family (an estimator with one parameter swept) becomes planes named
        ``<plane>[<param>=<value>]``, listed after the run's own. A malformed analysis is skipped
        with a warning in the log.
        """
        if self.run_dir is None:
            return 0
        from ibtui.engine.analyze import analysis_stem, load_analyses

        for description, arrays in load_analyses(self.run_dir):
            try:
                name = analysis_stem(str(description["estimator"]), str(description["param"]))
                epochs = [int(e) for e in arrays["epochs"]]
                planes = [str(p) for p in description["planes"]]
                loaded = {}
                for plane in planes:
                    ixt = np.asarray(arrays[f"{plane}.ixt"], dtype=np.float64)
                    ity = np.asarray(arrays[f"{plane}.ity"], dtype=np.float64)
                    if ixt.shape != ity.shape or ixt.ndim != 2 or ixt.shape[0] != len(epochs) \
                            or not np.isfinite(ixt).all() or not np.isfinite(ity).all():
                        raise ValueError(f"plane {plane} is malformed")
                    if self.layers and ixt.shape[1] != len(self.layers):
                        raise ValueError(f"plane {plane} has {ixt.shape[1]} layers; the run has {len(self.layers)}")
                    loaded[plane] = {e: (ixt[i].tolist(), ity[i].tolist()) for i, e in enumerate(epochs)}
                    if f"{plane}.ixt_seeds" in arrays:
                        sx, sy = np.asarray(arrays[f"{plane}.ixt_seeds"]), np.asarray(arrays[f"{plane}.ity_seeds"])
                        if sx.shape == sy.shape and sx.ndim == 3 and sx.shape[0] == len(epochs):
                            self.members[plane] = {e: (sx[i].tolist(), sy[i].tolist()) for i, e in enumerate(epochs)}
            except (KeyError, ValueError, TypeError) as exc:
                self.add_log(f"warning: analysis {description.get('arrays', '?')} skipped ({exc})")
                continue
            for plane, points in loaded.items():
                self.planes[plane] = points
                if plane not in self.plane_names:
                    self.plane_names.append(plane)
            self.families[name] = planes
            self.version += 1
            self.plane_version += 1
        return len(self.families)

    def family_planes(self, family: str) -> list[str]:
        """The planes of an analysis family that hold points, in the family's order."""
        return [p for p in self.families.get(family, []) if self.planes.get(p)]

    def family_of(self, plane: str) -> str | None:
        """The analysis family a plane belongs to (None for the run's own planes)."""
        return next((name for name, planes in self.families.items() if plane in planes), None)

    def _load_curves(self) -> None:
        try:
            path = run_file(self.run_dir or ".", CURVES)
            if not path.is_file():
                return
            arrays = read_npz(path)
            self.curves = {k: [float(v) for v in arrays[k]] for k in self.curves if k in arrays}
            for k in ("epoch", "train_loss", "train_acc", "test_acc"):
                self.curves.setdefault(k, [])
            layers = sorted(int(k.split(".", 1)[1]) for k in arrays if k.startswith("grad_mean.")
                            and k.split(".", 1)[1].isdigit())
            if layers and layers == list(range(len(layers))) and "epoch" in arrays:
                mean = np.stack([np.asarray(arrays[f"grad_mean.{i}"], dtype=np.float64) for i in layers], axis=1)
                std = np.stack([np.asarray(arrays[f"grad_std.{i}"], dtype=np.float64) for i in layers], axis=1)
                epochs = np.asarray(arrays["epoch"])
                if mean.shape == std.shape and mean.shape[0] == len(epochs):
                    self.grad_epochs = [int(e) for e in epochs]
                    self.grad_mean, self.grad_std = mean.tolist(), std.tolist()
        except (OSError, ValueError, KeyError, TypeError, UserError, zipfile.BadZipFile) as exc:
            self.add_log(f"warning: curves.npz unreadable ({exc})")


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
            meta = read_meta(path)
        except UserError:
            rows.append({"id": path.name, "path": str(path), "status": "unreadable", "preset": "?",
                         "created": "", "epochs": ""})
            continue
        rows.append({
            "id": path.name, "path": str(path), "status": str(meta.get("status", "?")),
            "preset": str(meta.get("preset", "?")), "created": str(meta.get("created", "")),
            "epochs": f"{meta.get('epochs_done', '?')}/{meta.get('epochs_total', '?')}",
        })
    return sorted(rows, key=lambda r: (r["created"], r["id"]), reverse=True)


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
        """Load a sweep directory. A foreign or corrupt one is a UserError."""
        from ibtui.engine.sweep import SWEEP

        root = Path(path)
        try:
            spec = json.loads((root / SWEEP).read_text())
            grid = [(str(k), [str(v) for v in values]) for k, values in spec["grid"]]
            cells = [SweepCell(str(c["name"]), dict(c["overrides"]), root / str(c["name"])) for c in spec["cells"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{root / SWEEP} is not a readable sweep description ({exc})") from None
        view = cls(root=root, sweep_id=str(spec.get("id", root.name)), preset=str(spec.get("preset", "?")),
                   grid=grid, cells=cells)
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
            summary = {c["name"]: c for c in json.loads((self.root / SUMMARY_JSON).read_text())["cells"]}
        except (OSError, ValueError, KeyError, TypeError):
            summary = {}
        for cell in self.cells:
            row = summary.get(cell.name, {})
            if cell.view is None and (cell.run_dir / META).is_file():
                try:
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
        """Peak and latest I(X;T) (bits) of ``plane``'s last hidden layer in ``cell``'s run."""
        view = cell.view
        if view is None or plane not in view.planes or not view.planes[plane]:
            return None, None
        layer = max(0, len(view.layers) - 2)
        _, ixt, _ = view.trajectory(plane, layer)
        values = [v for v in ixt if isinstance(v, float) and math.isfinite(v)]
        return (max(values), values[-1]) if values else (None, None)


def sweep_row(path: Path) -> dict[str, Any]:
    """A sweep's line in the list of runs: its cells' statuses from their meta.json only (the
    runs themselves are loaded when the sweep is opened)."""
    from ibtui.engine.sweep import SWEEP

    try:
        spec = json.loads((path / SWEEP).read_text())
        names = [str(c["name"]) for c in spec["cells"]]
    except (OSError, ValueError, KeyError, TypeError):
        return {"id": path.name, "path": str(path), "status": "unreadable", "preset": "?", "created": "", "epochs": ""}
    done = 0
    for name in names:
        try:
            done += read_meta(path / name).get("status") == "done"
        except UserError:
            pass
    return {"id": path.name, "path": str(path), "status": f"sweep {done}/{len(names)} done",
            "preset": str(spec.get("preset", "?")), "created": str(spec.get("created", "")),
            "epochs": f"{len(names)} cells"}
