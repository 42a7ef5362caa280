"""The run directory: the contract between the engine, replay and other tools.

``runs/<preset>-<UTC time>/`` holds
- ``config.toml``: the fully resolved configuration;
- ``meta.json``: versions, device, seed, layer names, planes, status
  (running | done | stopped | failed) and error; rewritten atomically;
- ``events.jsonl``: append-only, one JSON object per measured epoch (flushed and fsynced);
  readers skip a torn last line, so a run killed at any instant stays readable;
- ``planes.npz`` and ``curves.npz``: arrays written atomically (temp file, fsync, rename), at most
  once a second and at the end, so ``events.jsonl`` is the source of truth; ``curves.npz`` holds
  per trained epoch the running mean of the minibatch losses/accuracies during the epoch
  (``train_loss``, ``train_acc``) and the test set's loss/accuracy after it, whereas a measure
  event's ``train_loss``/``train_acc`` evaluate the whole training set after the epoch;
- ``checkpoints/e<epoch>.npz``: the weights at each measured epoch (plain arrays, no pickle);
- ``worker.log``: the engine's log.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ibtui.errors import UserError

EVENTS = "events.jsonl"
META = "meta.json"
CONFIG = "config.toml"
PLANES = "planes.npz"
CURVES = "curves.npz"
CHECKPOINTS = "checkpoints"
LOG = "worker.log"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def utc_stamp(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; match files created normally
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save arrays as an uncompressed .npz atomically (no pickled objects allowed)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz safely (``allow_pickle=False``).

    OSError when it cannot be opened; ValueError for anything else wrong with it (truncated,
    not a zip, pickled objects, a corrupt member).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except OSError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, ValueError (pickle), KeyError...
        raise ValueError(f"{path} is not a readable .npz ({type(exc).__name__}: {exc})") from None


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON lines of an events file; a torn or corrupt line is skipped."""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # torn last line of a killed writer
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
    except FileNotFoundError:
        return


def run_file(run_dir: Path, name: str | Path) -> Path:
    """``run_dir / name``, refusing anything (a symlink, say) that resolves outside the run directory.

    A run directory may come from someone else: reading it must never reach other files.
    """
    base = Path(run_dir).resolve()
    path = (base / name).resolve()
    if path != base and base not in path.parents:
        raise UserError(f"{Path(run_dir) / name} points outside the run directory; refusing to read it")
    return path


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    return list(iter_events(run_file(run_dir, EVENTS)))


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_file(run_dir, META)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not an ibtui run directory (no {META})") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a JSON object")
    return meta


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """Where the weights of ``epoch`` live (checked to stay inside the run directory)."""
    return run_file(run_dir, Path(CHECKPOINTS) / f"e{epoch:07d}.npz")


class RunStore:
    """Writer of one run directory. Create with :meth:`create`; all writes are crash-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self._events = None

    @classmethod
    def create(cls, runs_dir: Path, preset: str, config_toml: str, meta: dict[str, Any],
               name: str | None = None) -> "RunStore":
        """Make a new, uniquely named run directory (never reusing an existing one); ``name``
        asks for exactly ``runs_dir/name`` (a sweep's cell), an error if it exists."""
        runs_dir = Path(runs_dir)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create runs directory {runs_dir}: {exc.strerror or exc}") from None
        base = name or f"{preset}-{utc_stamp()}"
        for i in range(1 if name else 1000):
            path = runs_dir / (base if i == 0 else f"{base}-{i}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise UserError(f"cannot create run directory in {runs_dir}: {exc.strerror or exc}") from None
        else:
            raise UserError(f"{runs_dir / base} already exists" if name else
                            f"cannot find a free run directory name in {runs_dir}")
        store = cls(path)
        try:
            (path / CHECKPOINTS).mkdir()
            atomic_write_bytes(path / CONFIG, config_toml.encode())
            store.meta = {"id": path.name, **meta, "status": "running", "error": None,
                          "created": utc_stamp(), "updated": utc_stamp()}
            store.write_meta()
            store._events = open(path / EVENTS, "ab")
        except OSError as exc:
            store.close()
            shutil.rmtree(path, ignore_errors=True)  # no half-written run
            raise UserError(f"cannot write run directory {path}: {exc.strerror or exc}") from None
        return store

    @classmethod
    def open(cls, path: Path) -> "RunStore":
        """Reopen an existing run directory to append to it (resume)."""
        store = cls(path)
        store.meta = read_meta(path)
        try:
            store._events = open(Path(path) / EVENTS, "ab")
            store._drop_torn_tail()
        except OSError as exc:
            raise UserError(f"cannot append to {Path(path) / EVENTS}: {exc.strerror or exc}") from None
        return store

    def _drop_torn_tail(self) -> None:
        """Cut a killed writer's incomplete last line, so appended lines stay whole."""
        assert self._events is not None
        path = self.path / EVENTS
        data = path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            os.truncate(path, complete)
            self._events.seek(0, os.SEEK_END)

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        self.meta["updated"] = utc_stamp()
        atomic_write_bytes(self.path / META, (json.dumps(self.meta, indent=2, allow_nan=False) + "\n").encode())

    def append_event(self, event: dict[str, Any]) -> None:
        """Append one JSON line and fsync it: the line is either complete on disk or absent."""
        assert self._events is not None
        self._events.write((json.dumps(event, allow_nan=True, separators=(",", ":")) + "\n").encode())
        self._events.flush()
        os.fsync(self._events.fileno())

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_npz(self.path / name, arrays)

    def write_checkpoint(self, epoch: int, weights: dict[str, np.ndarray]) -> None:
        atomic_write_npz(checkpoint_path(self.path, epoch), weights)

    def close(self) -> None:
        if self._events is not None:
            try:
                self._events.close()
            except OSError:  # every line was already flushed and fsynced
                pass
            self._events = None
