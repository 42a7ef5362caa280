"""The run directory: the contract between the engine, replay and other tools.

``runs/<preset>-<UTC time>/`` holds
- ``config.toml``: the fully resolved configuration;
- ``meta.json``: versions, device, seed, layer names, planes, status
  (running | done | stopped | failed) and error; rewritten atomically;
- ``events.jsonl``: append-only, one JSON object per measured epoch (flushed and fsynced);
  readers skip a torn last line, so a run killed at any instant stays readable;
- ``curves.jsonl``: append-only, one JSON object per trained epoch (its losses and accuracies,
  gradient norms when recorded), fsynced before each checkpoint: the durable record of every
  epoch that ``curves.npz`` is rebuilt from on resume;
- ``planes.npz`` and ``curves.npz``: arrays written atomically (temp file, fsync, rename), at most
  once a second and at the end, so ``events.jsonl`` is the source of truth; ``curves.npz`` holds
  per trained epoch the running mean of the minibatch losses/accuracies during the epoch
  (``train_loss``, ``train_acc``) and the test set's loss/accuracy after it, whereas a measure
  event's ``train_loss``/``train_acc`` evaluate the whole training set after the epoch;
- ``checkpoints/e<epoch>.npz``: the weights at each measured epoch (plain arrays, no pickle);
- ``worker.log``: the engine's log;
- ``.lock``: held (``filelock``) by the one process writing the run: a second writer is refused,
  and a run whose lock is free is not being written, whatever ``meta.json`` says.

A run directory may come from someone else: files are appended to only through ``open_append``
(no symlinks, regular files only), every other write replaces a file atomically (a symlink is
replaced, never followed), and nothing is read or written outside the directory (``run_file``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ibtui.errors import UserError

EVENTS = "events.jsonl"
CURVES_LOG = "curves.jsonl"
LOCK = ".lock"
META = "meta.json"
CONFIG = "config.toml"
PLANES = "planes.npz"
CURVES = "curves.npz"
CHECKPOINTS = "checkpoints"
LOG = "worker.log"
STOP_REQUEST = "stop.request"  # made by ``ibtui stop`` (or the app) in a run another process writes


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


def _staged(path: Path, data: bytes) -> str:
    """``data`` in a new temp file beside ``path``, on disk (fsynced); its name. Removed on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; match files created normally
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename."""
    atomic_write_files({Path(path): data})


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Replace several files together: every one is staged on disk first (a full disk or an error
    leaves all of them as they were), then each is renamed into place."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_staged(Path(path), data), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
        raise
    for parent in {path.parent for _, path in staged}:
        _fsync_dir(parent)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as the bytes of an uncompressed .npz (no pickled objects allowed)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save arrays as an uncompressed .npz atomically (no pickled objects allowed)."""
    atomic_write_bytes(path, npz_bytes(arrays))


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


def read_file(path: Path, limit: int | None = None, offset: int = 0) -> bytes:
    """The bytes of ``path`` from ``offset``: only a regular file (a FIFO or a device is refused, never
    waited on; a symlink as the last component is not followed), at most ``limit`` bytes.
    FileNotFoundError when absent; UserError for anything else wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UserError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path} is not a regular file; refusing to read it")
        if limit is not None and info.st_size - offset > limit:
            raise UserError(f"{path} is larger than {limit >> 20} MB; refusing to read it")
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_append(path: Path) -> Any:
    """``path`` opened for appending (binary), created if missing; refuses a symlink or anything that
    is not a regular file (OSError), so a crafted run directory cannot make us write elsewhere."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o666 & ~_UMASK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON lines of an events file; a torn or corrupt line is skipped (regular files only)."""
    try:
        data = read_file(path)
    except FileNotFoundError:
        return
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break  # torn last line of a killed writer
        try:
            event = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            yield event


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
        meta = json.loads(read_file(path, limit=4 << 20))
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not an ibtui run directory (no {META})") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"{path} is unreadable: {str(exc)[:200]}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a JSON object")
    return meta


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """Where the weights of ``epoch`` live (checked to stay inside the run directory)."""
    return run_file(run_dir, Path(CHECKPOINTS) / f"e{epoch:07d}.npz")


def _epoch_of(raw: bytes, path: Path | None = None) -> int | None:
    """The integer ``epoch`` of one complete JSON line, or None; UserError for a line nested too
    deeply to decode (a crafted file: nothing is rewritten)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    except RecursionError:
        raise UserError(f"{path or 'a JSON-lines file'} has a line nested too deeply to read") from None
    epoch = value.get("epoch") if isinstance(value, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def keep_lines_through(path: Path, epoch: int) -> int:
    """Rewrite the JSON-lines file ``path`` atomically keeping its complete lines whose epoch is at
    most ``epoch`` (and those without one); a torn tail goes too. Untouched when nothing would go.
    Returns the number of lines dropped."""
    try:
        data = read_file(path)
    except FileNotFoundError:
        return 0
    lines = data.splitlines(keepends=True)
    kept = [line for line in lines if line.endswith(b"\n") and ((e := _epoch_of(line, path)) is None or e <= epoch)]
    if len(kept) == len(lines):
        return 0
    atomic_write_bytes(path, b"".join(kept))
    return len(lines) - len(kept)


def read_curves_log(run_dir: Path) -> dict[str, list[float]] | None:
    """The per-epoch rows of ``curves.jsonl`` as columns, one row per epoch (the last line written for
    an epoch wins), sorted by epoch; None when the run has no such file (runs of older versions)."""
    path = run_file(run_dir, CURVES_LOG)
    if not os.path.lexists(path):
        return None
    rows: dict[int, dict[str, Any]] = {}
    for row in iter_events(path):
        epoch = row.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1:
            rows[epoch] = row
    columns: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
            columns.setdefault(key, []).append(number)
    return columns


class RunLocked(UserError):
    """Another process holds the run directory's lock."""


def acquire_lock(run_dir: Path) -> Any:
    """Hold ``run_dir/.lock`` (``filelock``, released when the process ends, even by SIGKILL), or
    raise ``RunLocked``. Refuses a lock path that is a symlink or not a regular file."""
    from filelock import FileLock, Timeout

    path = Path(run_dir) / LOCK
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{path} is not a regular file; refusing to use this run directory")
    except FileNotFoundError:
        pass
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(f"{run_dir} is being written by another process (its lock is held)") from None
    except OSError as exc:
        raise UserError(f"cannot lock {run_dir}: {exc.strerror or exc}") from None
    return lock


def lock_is_held(run_dir: Path) -> bool:
    """True when some process holds the run's lock (it is being written now). Read-only: a run
    without a lock file (or not a regular one) is not locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return False
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def request_stop(run_dir: Path) -> bool:
    """Ask the process writing ``run_dir`` to stop after its current epoch, by creating
    ``run_dir/stop.request`` (exclusive, never through a symlink; no pid is read or signalled).
    Returns False when a stop was requested already. OSError when the directory is not writable."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(Path(run_dir) / STOP_REQUEST, flags, 0o666 & ~_UMASK)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(f"stop requested at {utc_stamp()} by process {os.getpid()}\n".encode())
    return True


def stop_requested(run_dir: Path) -> bool:
    """True when ``run_dir/stop.request`` exists (whatever it is: its presence is the request)."""
    return os.path.lexists(Path(run_dir) / STOP_REQUEST)


def clear_stop_request(run_dir: Path) -> None:
    """Remove ``run_dir/stop.request`` (unlink never follows a symlink); quiet when absent."""
    try:
        os.unlink(Path(run_dir) / STOP_REQUEST)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise UserError(f"{Path(run_dir) / STOP_REQUEST} is a directory; remove it to resume this run") from None


class RunStore:
    """Writer of one run directory: :meth:`create` a new one or :meth:`open` one to resume. It holds
    the run's lock while open; every write is crash-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self._events = None
        self._curves = None
        self._lock = None
        self.log_stream: Any = None  # worker.log, text, line-buffered (``open_append``)

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
            store._lock = acquire_lock(path)
            (path / CHECKPOINTS).mkdir()
            atomic_write_bytes(path / CONFIG, config_toml.encode())
            store.meta = {"id": path.name, **meta, "status": "running", "error": None,
                          "created": utc_stamp(), "updated": utc_stamp()}
            store.write_meta()
            store._open_appends()
        except (OSError, UserError) as exc:
            store.close()
            shutil.rmtree(path, ignore_errors=True)  # no half-written run
            reason = exc.strerror or exc if isinstance(exc, OSError) else exc
            raise UserError(f"cannot write run directory {path}: {reason}") from None
        return store

    @classmethod
    def open(cls, path: Path, through_epoch: int) -> "RunStore":
        """Reopen an existing run directory to resume it after ``through_epoch``: take its lock
        (``RunLocked`` if another process writes it), drop the lines of ``events.jsonl`` and
        ``curves.jsonl`` beyond that epoch (they are about to be recomputed; each file is replaced
        atomically, so an interruption leaves either the old or the new file), and append."""
        store = cls(path)
        store._lock = acquire_lock(path)
        try:
            store.meta = read_meta(path)
            clear_stop_request(path)  # a request made for the stopped run is not one for this resume
            for name in (EVENTS, CURVES_LOG):
                keep_lines_through(run_file(path, name), through_epoch)
            store._open_appends()
        except OSError as exc:
            store.close()
            raise UserError(f"cannot append to {path}: {exc.strerror or exc}") from None
        except BaseException:
            store.close()
            raise
        return store

    def _open_appends(self) -> None:
        self._events = open_append(run_file(self.path, EVENTS))
        self._curves = open_append(run_file(self.path, CURVES_LOG))
        self.log_stream = io.TextIOWrapper(open_append(run_file(self.path, LOG)), encoding="utf-8", line_buffering=True)

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

    def append_curve(self, row: dict[str, Any]) -> None:
        """Append one trained epoch's row to ``curves.jsonl`` (flushed; fsynced by ``sync_curves``)."""
        assert self._curves is not None
        self._curves.write((json.dumps(row, allow_nan=True, separators=(",", ":")) + "\n").encode())
        self._curves.flush()

    def sync_curves(self) -> None:
        """Make every appended curve row durable (before a checkpoint that a resume may start from)."""
        if self._curves is not None:
            os.fsync(self._curves.fileno())

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_npz(self.path / name, arrays)

    def write_checkpoint(self, epoch: int, weights: dict[str, np.ndarray]) -> None:
        atomic_write_npz(checkpoint_path(self.path, epoch), weights)

    def close(self) -> None:
        for name in ("_events", "_curves", "log_stream"):
            handle = getattr(self, name)
            if handle is not None:
                try:
                    handle.close()
                except OSError:  # every line was already flushed
                    pass
                setattr(self, name, None)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
