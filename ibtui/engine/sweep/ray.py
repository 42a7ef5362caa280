"""The Ray backend: each cell a Ray task with its CPU/GPU request; Ray retries; files shipped back."""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import socket
from pathlib import Path
from typing import Any, Callable, Iterator


from ibtui.rundir.store import atomic_write_bytes
from ibtui.errors import UserError
from ibtui.engine.sweep.local import _limit_threads, _set_aside, run_cell
from ibtui.engine.sweep.results import Outcome, Sweep, cell_result
from ibtui.engine.sweep.spec import Cell, SHIPPED


class CellFailed(RuntimeError):
    """A cell's run ended `failed`: raised inside a Ray task so that Ray retries it."""


def _ray_task(raw_config: dict[str, Any], run_dir: str, driver_host: str) -> dict[str, Any]:
    """Body of the Ray task: run the cell; ship its files back when this node is not the driver's."""
    _limit_threads(raw_config)
    result = run_cell(raw_config, run_dir)
    if result["status"] == "failed":
        raise CellFailed(result.get("error") or "run failed")
    host = platform.node()
    files = None
    if host != driver_host:
        files = {name: (Path(run_dir) / name).read_bytes() for name in SHIPPED if (Path(run_dir) / name).is_file()}
    return {"result": result, "host": host, "files": files}


def _first_line(exc: BaseException) -> str:
    """The innermost cause of a Ray error, one line."""
    cause = getattr(exc, "cause", None) or exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    lines = [line for line in text if line.strip() and not line.startswith(("Traceback", "  "))]
    return (lines[-1] if lines else type(cause).__name__)[:300]


CONNECT_TIMEOUT_S = 10.0
"""How long ``HOST:PORT`` may take to accept a TCP connection (Ray itself retries for many minutes)."""


def _probe(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address must accept a TCP connection within
    ``CONNECT_TIMEOUT_S``; other forms (``auto``) are left to Ray."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(f"cannot connect to Ray at {address}: {reason}") from None


@contextlib.contextmanager
def ray_session(address: str | None, init_kwargs: dict[str, Any] | None = None) -> Iterator[Any]:
    """Ray, connected to ``address`` (None or ``local``: a new single-node instance on the loopback
    interface) for the block, and shut down after it; an instance already initialised is used as
    it is. UserError, one line and in bounded time, when Ray is missing or cannot be reached."""
    try:
        import ray
    except ImportError:
        raise UserError("the Ray backend needs Ray: pip install 'ibtui[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    local = address in (None, "local")
    if not local:
        _probe(str(address))
    try:
        ray.init(**{"address": None if local else address, "include_dashboard": False, "log_to_driver": False,
                    "logging_level": logging.ERROR, **({"_node_ip_address": "127.0.0.1"} if local else {}),
                    **(init_kwargs or {})})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot connect to Ray at {address}: {_first_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(sweep: Sweep, cells: list[Cell], address: str | None, retries: int, cpus_per_cell: float,
            gpus_per_cell: float, on_outcome: Callable[[Outcome], None],
            on_start: Callable[[Cell, int], None] = lambda c, a: None, init_kwargs: dict[str, Any] | None = None) -> bool:
    """Run ``cells`` as Ray tasks (``num_cpus``, ``num_gpus`` per task; ``max_retries`` = ``retries``
    for crashed workers and failed runs alike), streaming outcomes as tasks finish. Connects first
    (``ray_session``) unless Ray is already initialised."""
    with ray_session(address, init_kwargs) as ray:
        return _run_tasks(ray, sweep, cells, retries, cpus_per_cell, gpus_per_cell, on_outcome, on_start)


def _run_tasks(ray: Any, sweep: Sweep, cells: list[Cell], retries: int, cpus_per_cell: float,
               gpus_per_cell: float, on_outcome: Callable[[Outcome], None],
               on_start: Callable[[Cell, int], None]) -> bool:
    """``run_ray``'s body, on a connected ``ray``."""
    threads = max(1, math.floor(cpus_per_cell))
    task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=retries,
                      retry_exceptions=True)(_ray_task)
    host = platform.node()
    refs = {}
    for cell in cells:
        raw = sweep.spec.config(cell, threads).to_dict()
        refs[task.remote(raw, str(sweep.cell_dir(cell).resolve()), host)] = cell
        on_start(cell, 1)
    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            cell = refs[ready[0]]
            try:
                reply = ray.get(ready[0])
            except Exception as exc:  # retries exhausted (or the task was cancelled)
                try:
                    result = cell_result(sweep.cell_dir(cell))
                except UserError:
                    result = {}
                on_outcome(Outcome(cell, "failed", retries + 1, _first_line(exc), result))
                continue
            if reply["files"] is not None:
                _write_shipped(sweep.cell_dir(cell), reply["files"])
            on_outcome(Outcome(cell, "done", None, None, reply["result"], reply["host"]))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        for ref in pending:
            on_outcome(Outcome(refs[ref], "stopped", None, None, {}))
        return False
    return True


def _write_shipped(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a remote cell's files where the driver keeps the sweep (no checkpoints: those stay remote)."""
    if run_dir.is_symlink():  # never written through
        _set_aside(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name in SHIPPED:
            atomic_write_bytes(run_dir / name, data)
