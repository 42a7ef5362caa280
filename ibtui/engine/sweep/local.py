"""The local backend: one spawned process per cell, at most ``workers`` at once, with retries."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import time
from pathlib import Path
from typing import Any, Callable


from ibtui.config import config_from_dict
from ibtui.rundir.reader import read_run_meta
from ibtui.rundir.store import CONFIG, lock_is_held, utc_stamp
from ibtui.errors import UserError
from ibtui.engine.sweep.results import Outcome, Sweep, cell_result
from ibtui.engine.sweep.spec import Cell


def _set_aside(path: Path) -> None:
    """Move an unusable cell directory (or a symlink in its place) out of the way, within the
    sweep (its files are kept, never deleted)."""
    target = path.with_name(f"{path.name}.set-aside-{utc_stamp()}")
    path.rename(target)


def run_cell(raw_config: dict[str, Any], run_dir: str | Path, stop: Any = None) -> dict[str, Any]:
    """Run one cell to its end in this process: skip it if done, resume it if it has a
    checkpoint, else start it fresh at exactly ``run_dir``. Returns ``cell_result``."""
    from ibtui.engine.runner import execute, resume

    path = Path(run_dir)
    if path.is_symlink():  # it could point anywhere: never written through
        _set_aside(path)
    if path.exists():
        _wait_for_writer(path)
        try:
            status = read_run_meta(path)["status"]
        except UserError:
            status = None
        if status == "done":
            return cell_result(path)
        if status is not None:
            try:
                resume(path, stop=stop)
                return cell_result(path)
            except UserError as exc:
                if "still being written" in str(exc):
                    raise
        _set_aside(path)  # no meta, or no checkpoint to resume from
    cfg = config_from_dict(raw_config, source=str(path / CONFIG))
    execute(cfg, stop=stop, runs_dir=path.parent, run_name=path.name)
    return cell_result(path)


WRITER_WAIT_S = 60.0


def _wait_for_writer(path: Path, seconds: float = WRITER_WAIT_S) -> None:
    """A cell whose process is still stopping (its earlier driver died, so it got SIGTERM and is
    writing its final files) is waited for, up to ``seconds``, rather than reported as failed."""
    deadline = time.monotonic() + seconds
    while lock_is_held(path) and time.monotonic() < deadline:
        time.sleep(0.2)


def _limit_threads(raw_config: dict[str, Any]) -> None:
    """Every torch op of a worker on its share of the cores (``train.threads``), not only the
    engine's training and measurement blocks: cells side by side must not oversubscribe."""
    import torch

    threads = int(raw_config.get("train", {}).get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)


PR_SET_PDEATHSIG = 1


def _die_with(driver: int) -> None:
    """Linux: the kernel sends this process SIGTERM when the driver dies (even by SIGKILL), so a
    cell never outlives its sweep; it stops like Ctrl+C (``stopped``, epochs kept) and the same
    sweep command resumes it. Elsewhere nothing (the driver still stops its cells when it can)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != driver:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _cell_process(raw_config: dict[str, Any], run_dir: str, reply: Any, driver: int | None = None) -> None:
    """Entry point of a local worker process: SIGTERM (or SIGHUP) stops the run like Ctrl+C
    (epochs kept), and so does the death of the ``driver`` process. An error that leaves no run
    behind (e.g. a missing dataset) is sent on ``reply`` as one line."""
    from ibtui.engine.signals import stop_on_signals

    try:
        with stop_on_signals((signal.SIGTERM, signal.SIGHUP)):
            if driver is not None:
                _die_with(driver)
            _limit_threads(raw_config)
            result = run_cell(raw_config, run_dir)
    except KeyboardInterrupt:
        os._exit(130)
    except Exception as exc:  # UserError and anything unexpected: reported, the cell retried
        reply.send(str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
        os._exit(2)
    os._exit(0 if result["status"] == "done" else 1)


def default_workers(n_cells: int) -> int:
    """One worker per CPU core, no more than there are cells."""
    return max(1, min(n_cells, os.cpu_count() or 1))


def _message(receive: Any) -> str | None:
    """The one-line error a worker process sent before exiting, if any (closes the pipe)."""
    try:
        return receive.recv() if receive.poll() else None
    except (EOFError, OSError):
        return None
    finally:
        receive.close()


def run_local(sweep: Sweep, cells: list[Cell], workers: int, retries: int,
              on_outcome: Callable[[Outcome], None], on_start: Callable[[Cell, int], None] = lambda c, a: None,
              poll_s: float = 1.0) -> bool:
    """Run ``cells`` in spawned processes, at most ``workers`` at once, each with cores/workers torch
    threads. Returns False when interrupted (Ctrl+C/SIGTERM: running cells are stopped, epochs kept)."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    queue = [(cell, 1) for cell in cells]
    running: dict[Any, tuple[Cell, int, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                cell, attempt = queue.pop(0)
                raw = sweep.spec.config(cell, threads).to_dict()
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_cell_process, args=(raw, str(sweep.cell_dir(cell)), send, os.getpid()),
                                      daemon=False)
                process.start()
                send.close()
                running[process] = (cell, attempt, receive)
                on_start(cell, attempt)
            for process in [p for p in running if not p.is_alive()]:
                process.join()
                cell, attempt, receive = running.pop(process)
                message = _message(receive)
                try:
                    result = cell_result(sweep.cell_dir(cell))
                except UserError as exc:  # no run directory: the process failed before creating it
                    result = {"status": "failed", "error": message or str(exc)}
                if message and result.get("status") != "done":
                    result["error"] = message
                status = result.get("status")
                if status == "done":
                    on_outcome(Outcome(cell, "done", attempt, None, result, platform.node()))
                elif status == "stopped" or process.exitcode == 130:
                    on_outcome(Outcome(cell, "stopped", attempt, result.get("error"), result, platform.node()))
                else:
                    error = result.get("error") or f"worker process exited with code {process.exitcode}"
                    if attempt <= retries:
                        queue.insert(0, (cell, attempt + 1))
                    else:
                        on_outcome(Outcome(cell, "failed", attempt, error, result, platform.node()))
            if running:
                multiprocessing.connection.wait([p.sentinel for p in running], timeout=poll_s)
    except KeyboardInterrupt:
        _stop_all(running)  # SIGTERM: each cell's run ends as `stopped`, epochs kept
        for process, (cell, attempt, _) in list(running.items()):
            try:
                result = cell_result(sweep.cell_dir(cell))
            except UserError:
                result = {}
            on_outcome(Outcome(cell, "stopped", attempt, None, result, platform.node()))
        return False
    except BaseException:  # e.g. the outcome could not be recorded: no cell keeps running unwatched
        _stop_all(running)
        raise
    return True


def _stop_all(running: dict[Any, Any]) -> None:
    """SIGTERM every running cell (each ends `stopped`, epochs kept) and wait for it."""
    for process in running:
        if process.is_alive():
            process.terminate()
    for process in running:
        process.join()
