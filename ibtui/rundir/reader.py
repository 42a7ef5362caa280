"""The one reader of run directories: ``load_run(path) -> Run`` (and ``load_sweep``).

A run directory may come from someone else. Everything read from it is validated here, once:
files are opened only inside the directory (``run_file``), only when they are regular files
(a FIFO or a device never blocks a reader), never through a symlink out, within size limits,
with no pickle; JSON and TOML that nest too deeply, numbers that are not finite or out of range,
arrays of the wrong dtype or shape are refused with one ``UserError`` line. Strings read from a
run (ids, statuses, layer and plane names, errors) are data: front doors escape them before display.

Values: information in bits; epochs count the epochs of training (epoch 0 is the untrained
network); ``PlaneData.ixt``/``.ity`` are (E, L) for one network and (E, S, L) for an ensemble of
S networks, ``.ixt_mean``/``.ity_mean`` always (E, L).
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ibtui.errors import UserError
from ibtui.rundir.records import MAX_BITS, MAX_LAYERS, MAX_MEMBERS, MeasureRecord
from ibtui.runinfo import clean_info
from ibtui.rundir.store import CHECKPOINTS, CONFIG, CURVES, EVENTS, LOCK, META, lock_is_held, read_file, run_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ANALYSIS = "analysis"
STATUSES = ("running", "done", "stopped", "failed")
LIVE = ("running",)
MAX_TEXT_BYTES = 4 << 20
"""meta.json, config.toml and analysis descriptions are small; anything larger is refused."""
MAX_EPOCHS = 10**9
MAX_NAME = 200


# ----------------------------------------------------------------------------- safe files


def read_regular(run_dir: Path, name: str | Path, limit: int | None = MAX_TEXT_BYTES, offset: int = 0) -> bytes:
    """The bytes of ``run_dir/name`` from ``offset``: only a regular file inside the directory (a
    FIFO, a device or a symlink out is refused, never opened for long), at most ``limit`` bytes.
    FileNotFoundError when absent; UserError for anything else wrong."""
    return read_file(run_file(run_dir, name), limit, offset)


def read_json(run_dir: Path, name: str | Path) -> Any:
    """A small JSON file of the run, parsed (UserError for unreadable, malformed or too deep JSON)."""
    data = read_regular(run_dir, name)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{Path(run_dir) / name} is not valid JSON ({str(exc)[:80]})") from None


def read_arrays(run_dir: Path, name: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz of the run (no pickle, numeric or bool dtypes only); UserError otherwise."""
    path = run_file(run_dir, name)
    try:
        data = read_regular(run_dir, name, limit=None)
    except FileNotFoundError:
        raise
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # BadZipFile, EOFError, ValueError (pickled objects), ...
        raise UserError(f"{path} is not a readable .npz ({type(exc).__name__})") from None
    for key, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise UserError(f"{path}: array {key[:60]!r} has dtype {value.dtype}; expected numbers")
    return arrays


# ----------------------------------------------------------------------------- meta


def _text(value: Any, limit: int = MAX_NAME) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _count(value: Any, high: int) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high
    return value if ok else None


def _bits(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= MAX_BITS
    return float(value) if ok else None


def validate_meta(raw: Any, where: str) -> dict[str, Any]:
    """meta.json as a dict of checked values: ``layers`` (names) and ``planes`` are required, the
    rest is coerced (a bad optional value becomes None; an unknown status "unknown")."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} is not a JSON object")
    layers = raw.get("layers")
    if not (isinstance(layers, list) and 1 <= len(layers) <= MAX_LAYERS and all(isinstance(x, str) for x in layers)):
        raise UserError(f"{where}: 'layers' must be a list of 1 to {MAX_LAYERS} layer names")
    planes = raw.get("planes")
    if not (isinstance(planes, list) and len(planes) <= 1000 and all(isinstance(x, str) for x in planes)):
        raise UserError(f"{where}: 'planes' must be a list of plane names")
    seeds = raw.get("seeds")
    if not (isinstance(seeds, list) and 1 <= len(seeds) <= MAX_MEMBERS
            and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        seed = raw.get("seed")
        seeds = [seed] if isinstance(seed, int) and not isinstance(seed, bool) else [0]
    status = raw.get("status")
    meta = dict(raw)
    meta.update({
        "id": _text(raw.get("id")) or Path(where).parent.name,
        "status": status if status in STATUSES else "unknown",
        "error": _text(raw.get("error"), 2000),
        "layers": [x[:MAX_NAME] for x in layers], "planes": [x[:MAX_NAME] for x in planes],
        "seeds": seeds,
        "epochs_total": _count(raw.get("epochs_total"), MAX_EPOCHS),
        "epochs_done": _count(raw.get("epochs_done"), MAX_EPOCHS),
        "h_x": _bits(raw.get("h_x")), "h_y": _bits(raw.get("h_y")),
        "pid": _count(raw.get("pid"), 2**31), "host": _text(raw.get("host")),
    })
    for key in ("preset", "description", "device", "dataset", "dataset_description", "created", "updated"):
        meta[key] = _text(raw.get(key), 1000)
    meta.update(clean_info(raw))  # name, tags, note, overrides of the preset: well-formed or dropped
    return meta


def read_run_meta(path: str | Path) -> dict[str, Any]:
    """A run's validated meta.json (UserError for a foreign or malformed directory)."""
    path = Path(path)
    try:
        raw = read_json(path, META)
    except FileNotFoundError:
        raise UserError(f"{path} is not an ibtui run directory (no {META})") from None
    return validate_meta(raw, str(path / META))


def writer_alive(path: Path, meta: dict[str, Any]) -> bool:
    """Is some process writing this run now? Its lock says so; a run of an older version (no lock
    file) is judged by its pid on this host."""
    if lock_is_held(path):
        return True
    if (path / LOCK).exists():
        return False
    pid = meta.get("pid")
    if meta.get("host") != platform.node() or not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def shown_status(path: Path, meta: dict[str, Any]) -> str:
    """meta.json's status, except ``killed`` for a run marked running whose writer is gone."""
    status = meta["status"]
    if status in LIVE and not writer_alive(path, meta):
        return "killed"
    return status


# ----------------------------------------------------------------------------- planes


@dataclass(frozen=True)
class PlaneData:
    """One plane's trajectories: ``epochs`` (E,), per member and layer I(X;T) and I(T;Y) in bits,
    and for pooled plug-in planes H(T|X) with its cap (see the module docstring for shapes)."""

    name: str
    layers: tuple[str, ...]
    epochs: np.ndarray
    members_ixt: np.ndarray  # (E, S, L)
    members_ity: np.ndarray
    h_t_x: np.ndarray | None = None  # (E, S, L)
    cap: np.ndarray | None = None  # (E,)

    @property
    def members(self) -> int:
        return int(self.members_ixt.shape[1])

    @property
    def ixt(self) -> np.ndarray:
        return self.members_ixt[:, 0, :] if self.members == 1 else self.members_ixt

    @property
    def ity(self) -> np.ndarray:
        return self.members_ity[:, 0, :] if self.members == 1 else self.members_ity

    @property
    def ixt_mean(self) -> np.ndarray:
        return self.members_ixt.mean(axis=1)

    @property
    def ity_mean(self) -> np.ndarray:
        return self.members_ity.mean(axis=1)

    @property
    def saturated(self) -> np.ndarray | None:
        """(E, L): any member's H(T|X) at its cap."""
        if self.h_t_x is None or self.cap is None:
            return None
        return (self.h_t_x >= (self.cap - 1e-9 * np.maximum(1.0, self.cap))[:, None, None]).any(axis=1)


def plane_from_records(name: str, layers: list[str], records: list[MeasureRecord]) -> PlaneData:
    """PlaneData of ``name`` from the records that hold it (epoch order); members must agree."""
    rows = [(r.epoch, r.planes[name]) for r in records if name in r.planes]
    size = max((v.members for _, v in rows), default=1)
    rows = [(e, v) for e, v in rows if v.members == size]
    L = len(layers)
    empty = np.zeros((0, size, L))
    ixt = np.stack([v.ixt for _, v in rows]) if rows else empty
    ity = np.stack([v.ity for _, v in rows]) if rows else empty
    pooled = bool(rows) and all(v.h_t_x is not None for _, v in rows)
    return PlaneData(name, tuple(layers), np.asarray([e for e, _ in rows], dtype=np.int64), ixt, ity,
                     np.stack([v.h_t_x for _, v in rows]) if pooled else None,
                     np.asarray([v.cap for _, v in rows], dtype=np.float64) if pooled else None)


@dataclass(frozen=True)
class Analysis:
    """A stored re-analysis (``ibtui analyze``): the estimator, the parameter varied and its values,
    and its planes (labels ``<plane>[<param>=<value>]``)."""

    name: str
    estimator: str
    param: str
    values: tuple[Any, ...]
    planes: dict[str, PlaneData]


def _analysis(run_dir: Path, description_name: str, layers: list[str]) -> Analysis:
    description = read_json(run_dir, Path(ANALYSIS) / description_name)
    if not isinstance(description, dict):
        raise UserError("its description is not an object")
    estimator, param = description.get("estimator"), description.get("param", "")
    labels = description.get("planes")
    if not (isinstance(estimator, str) and isinstance(param, str) and isinstance(labels, list)
            and all(isinstance(p, str) for p in labels) and len(labels) <= 1000):
        raise UserError("its description lacks estimator, param or planes")
    arrays = read_arrays(run_dir, Path(ANALYSIS) / f"{Path(description_name).stem}.npz")
    epochs = arrays.get("epochs")
    if epochs is None or epochs.ndim != 1 or epochs.dtype.kind not in "iu" or len(epochs) > MAX_EPOCHS:
        raise UserError("its epochs are missing or malformed")
    planes = {}
    E, L = len(epochs), len(layers)
    for label in labels:
        ixt, ity = arrays.get(f"{label}.ixt"), arrays.get(f"{label}.ity")
        if ixt is None or ity is None or ixt.shape != (E, L) or ity.shape != (E, L):
            raise UserError(f"plane {label[:60]} is not {E} epochs × {L} layers")
        members_ixt, members_ity = ixt[:, None, :], ity[:, None, :]
        sx, sy = arrays.get(f"{label}.ixt_seeds"), arrays.get(f"{label}.ity_seeds")
        if sx is not None and sy is not None and sx.shape == sy.shape and sx.ndim == 3 and sx.shape[::2] == (E, L):
            members_ixt, members_ity = sx, sy
        if not (np.isfinite(members_ixt).all() and np.isfinite(members_ity).all()):
            raise UserError(f"plane {label[:60]} holds NaN/inf")
        planes[label] = PlaneData(label, tuple(layers), epochs.astype(np.int64), members_ixt.astype(np.float64),
                                  members_ity.astype(np.float64))
    values = description.get("values") if isinstance(description.get("values"), list) else []
    name = f"{estimator}-{param}" if param else estimator
    return Analysis(name[:MAX_NAME], estimator[:MAX_NAME], param[:MAX_NAME], tuple(values), planes)


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """A run directory, read and validated (``load_run``). ``records`` are the measured epochs in
    epoch order (the last line written for an epoch wins); ``poll``/``follow`` read what a run
    still being written appends; ``warnings`` lists what was skipped and why."""

    path: Path
    meta: dict[str, Any]
    records: list[MeasureRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _by_epoch: dict[int, MeasureRecord] = field(default_factory=dict, repr=False)
    _offset: int = field(default=0, repr=False)
    _config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    @property
    def planes(self) -> list[str]:
        """The run's planes, then those of its analyses."""
        names = list(self.meta["planes"])
        for record in self.records:
            names += [n for n in record.planes if n not in names]
        for analysis in self.analyses:
            names += [n for n in analysis.planes if n not in names]
        return names

    @property
    def status(self) -> str:
        """``running``, ``done``, ``stopped``, ``failed``, ``killed`` (marked running, but no process
        writes it any more) or ``unknown``."""
        return shown_status(self.path, self.meta)

    @property
    def epochs(self) -> list[int]:
        return [r.epoch for r in self.records]

    @property
    def config(self) -> dict[str, Any]:
        """config.toml as a dict (the fully resolved configuration the run was started with)."""
        if self._config is None:
            data = read_regular(self.path, CONFIG)
            try:
                self._config = tomllib.loads(data.decode("utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
                raise UserError(f"{self.path / CONFIG} is not valid TOML ({str(exc)[:80]})") from None
        return self._config

    def settings(self) -> Any:
        """The configuration as a validated ``ibtui.config.Config`` (UserError when it is not one)."""
        from ibtui.config import config_from_dict

        return config_from_dict(self.config, source=str(self.path / CONFIG))

    # ------------------------------------------------------------------ records
    def poll(self) -> list[MeasureRecord]:
        """Read the complete lines appended to events.jsonl since the last call; returns the new
        records (a malformed line is skipped, with a warning)."""
        try:
            data = read_regular(self.path, EVENTS, limit=None, offset=self._offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a torn tail waits for its newline
        fresh = []
        layers, total = len(self.meta["layers"]), self.meta.get("epochs_total")
        for number, raw in enumerate(data[:end].splitlines()):
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                self.warnings.append("skipped a line of events.jsonl that is not JSON")
                continue
            if isinstance(value, dict) and value.get("type") not in (None, "measure"):
                continue
            try:
                record = MeasureRecord.from_json(value, layers, max_epoch=total)
            except ValueError as exc:
                self.warnings.append(f"skipped a malformed line of events.jsonl ({str(exc)[:100]})")
                continue
            fresh.append(record)
            self._by_epoch[record.epoch] = record
        self._offset += end
        if fresh:
            self.records = [self._by_epoch[e] for e in sorted(self._by_epoch)]
        return fresh

    def refresh(self) -> bool:
        """Re-read meta.json; True when the status or the epochs done changed."""
        try:
            meta = read_run_meta(self.path)
        except UserError:
            return False
        changed = (meta["status"], meta["epochs_done"]) != (self.meta["status"], self.meta["epochs_done"])
        self.meta = meta
        return changed

    def follow(self, interval: float = 0.5, timeout: float | None = None) -> Iterator[MeasureRecord]:
        """Yield the records already there, then each new one as the run writes it, until the run
        has ended (its status is final, or its writer is gone) or ``timeout`` seconds passed."""
        yield from self.records
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fresh = self.poll()
            yield from fresh
            self.refresh()
            if not fresh and self.status not in LIVE:
                yield from self.poll()  # the last lines written before the end
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            if not fresh:
                time.sleep(interval)

    def plane(self, name: str) -> PlaneData:
        """One plane's trajectories (a plane of the run, or of one of its analyses)."""
        for analysis in self.analyses:
            if name in analysis.planes:
                return analysis.planes[name]
        if not any(name in r.planes for r in self.records) and name not in self.meta["planes"]:
            raise UserError(f"{self.id} has no plane {name[:80]!r}; planes: {', '.join(self.planes)[:300]}")
        return plane_from_records(name, self.layers, self.records)

    # ------------------------------------------------------------------ arrays
    @property
    def curves(self) -> dict[str, np.ndarray]:
        """Per trained epoch: ``epoch`` and the losses (nats) and accuracies, gradient norms when
        recorded, as 1-D float arrays of equal length (from curves.jsonl, else curves.npz)."""
        from ibtui.rundir.store import read_curves_log

        try:
            columns = read_curves_log(self.path)
        except (OSError, UserError, ValueError, RecursionError) as exc:
            self.warnings.append(f"curves.jsonl unreadable ({str(exc)[:80]})")
            columns = None
        if columns is None:
            try:
                arrays = read_arrays(self.path, CURVES)
            except FileNotFoundError:
                return {}
            except UserError as exc:
                self.warnings.append(str(exc))
                return {}
            columns = {k: v for k, v in arrays.items()}
        out = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in columns.items()
               if np.asarray(v).ndim == 1 and len(k) <= MAX_NAME}
        lengths = {len(v) for v in out.values()}
        if "epoch" not in out or len(lengths) != 1:
            if out:
                self.warnings.append("curves skipped: columns of different lengths or no epoch column")
            return {}
        return out

    @property
    def analyses(self) -> list[Analysis]:
        """The run's stored re-analyses (a malformed one is skipped, with a warning)."""
        folder = run_file(self.path, ANALYSIS)
        if not folder.is_dir() or Path(self.path, ANALYSIS).is_symlink():
            return []
        found = []
        for description in sorted(p.name for p in folder.glob("*.json"))[:200]:
            try:
                found.append(_analysis(self.path, description, self.layers))
            except (UserError, FileNotFoundError) as exc:
                warning = f"analysis {description[:60]} skipped ({str(exc)[:120]})"
                if warning not in self.warnings:
                    self.warnings.append(warning)
        return found

    def checkpoint(self, epoch: int) -> dict[str, np.ndarray]:
        """The arrays of ``epoch``'s checkpoint (weights, and ``resume.*`` state); UserError when absent."""
        try:
            return read_arrays(self.path, Path(CHECKPOINTS) / f"e{int(epoch):07d}.npz")
        except FileNotFoundError:
            raise UserError(f"{self.id} has no checkpoint of epoch {epoch}") from None

    def checkpointed_epochs(self) -> list[int]:
        """Measured epochs with a checkpoint file."""
        folder = run_file(self.path, CHECKPOINTS)
        return [e for e in self.epochs if (folder / f"e{e:07d}.npz").is_file()] if folder.is_dir() else []

    def model_at(self, epoch: int) -> Any:
        """The run's network (an ``ibtui.engine.model.Ensemble``, or ``ibtui.engine.cnn.ConvEnsemble``
        for a CNN run; in eval mode) with the weights of
        ``epoch``'s checkpoint. Imports torch."""
        import torch

        from ibtui.engine.prepare import prepare

        prep = prepare(self.settings())
        arrays = self.checkpoint(epoch)
        try:
            prep.model.load_state_arrays({k: torch.as_tensor(v) for k, v in arrays.items()
                                          if not k.startswith("resume.")})
        except ValueError as exc:
            raise UserError(f"the checkpoint of epoch {epoch} does not fit the run's network ({exc})") from None
        return prep.model.eval()

    # ------------------------------------------------------------------ notebooks
    def to_frame(self, planes: list[str] | None = None) -> Any:
        """A tidy pandas DataFrame, one row per (plane, layer, epoch, member): columns ``plane``,
        ``layer``, ``epoch``, ``member``, ``ixt_bits``, ``ity_bits``. Needs pandas
        (``pip install 'ibtui[notebook]'``)."""
        pd = _pandas()
        frames = []
        for name in planes or self.planes:
            data = self.plane(name)
            E, S, L = data.members_ixt.shape
            frames.append(pd.DataFrame({
                "plane": name,
                "layer": np.tile(np.asarray(data.layers, dtype=object), E * S),
                "epoch": np.repeat(data.epochs, S * L),
                "member": np.tile(np.repeat(np.arange(S), L), E),
                "ixt_bits": data.members_ixt.reshape(-1),
                "ity_bits": data.members_ity.reshape(-1),
            }))
        columns = ["plane", "layer", "epoch", "member", "ixt_bits", "ity_bits"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise UserError("to_frame needs pandas: pip install 'ibtui[notebook]'") from None
    return pandas


def load_run(path: str | Path) -> Run:
    """Read and validate a run directory (UserError, one line, for anything malformed)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")
    run = Run(path=path, meta=read_run_meta(path))
    run.poll()
    return run


# ----------------------------------------------------------------------------- sweeps

SWEEP = "sweep.json"


@dataclass
class SweepCell:
    """One cell of a sweep: its name, its grid values, its run directory (``run()`` loads it)."""

    name: str
    overrides: dict[str, Any]
    path: Path

    def run(self) -> Run | None:
        """The cell's run, or None when it has not started."""
        refuse_symlinked_cell(self.path)
        if not (self.path / META).exists():
            return None
        return load_run(self.path)


def refuse_symlinked_cell(path: Path) -> None:
    """A sweep's cell must be a directory of the sweep itself: a symlink (which could point
    anywhere) is refused, so reading or resuming a sweep never reaches outside it."""
    if Path(path).is_symlink():
        raise UserError(f"{path} is a symlink, not a cell directory of the sweep; refusing to use it")


@dataclass
class Sweep:
    """A sweep directory (``ibtui sweep``): its spec and its cells."""

    path: Path
    id: str
    preset: str
    grid: list[tuple[str, list[str]]]
    cells: list[SweepCell]
    spec: dict[str, Any]

    def to_frame(self, planes: list[str] | None = None) -> Any:
        """Every started cell's ``Run.to_frame`` with a ``cell`` column and one column per grid key."""
        pd = _pandas()
        frames = []
        for cell in self.cells:
            run = cell.run()
            if run is None:
                continue
            frame = run.to_frame(planes)
            frame.insert(0, "cell", cell.name)
            for key, _ in self.grid:
                frame[key] = cell.overrides.get(key)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep directory (UserError for a foreign or malformed one)."""
    root = Path(path)
    try:
        spec = read_json(root, SWEEP)
    except FileNotFoundError:
        raise UserError(f"{root} is not an ibtui sweep directory (no {SWEEP})") from None
    where = root / SWEEP
    try:
        if not isinstance(spec, dict):
            raise TypeError("not an object")
        grid = [(str(k)[:MAX_NAME], [str(v)[:MAX_NAME] for v in values]) for k, values in spec["grid"]]
        cells = []
        for cell in spec["cells"]:
            name = str(cell["name"])
            if not name or name in (".", "..") or "/" in name or "\\" in name or len(name) > 255:
                raise ValueError(f"cell name {name[:60]!r} is not a directory name")
            overrides = cell.get("overrides", {})
            if not isinstance(overrides, dict):
                raise TypeError("cell overrides are not an object")
            cells.append(SweepCell(name, {str(k): v for k, v in overrides.items()}, root / name))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{where} is not a readable sweep description ({str(exc)[:80]})") from None
    return Sweep(root, str(spec.get("id", root.name))[:MAX_NAME], str(spec.get("preset", "?"))[:MAX_NAME], grid,
                 cells, spec)
