"""The engine in a spawned worker process, streaming events over a bounded queue.

Used by the TUI (never a thread of the UI process). The child:
- ignores SIGINT (the parent asks it to stop through ``stop``) and stops by itself when
  its parent dies, so quitting never leaves an orphan; SIGTERM and SIGHUP stop the run cleanly;
- runs at a lower CPU priority than the UI, so keys are answered at once while it trains;
- writes its stdout/stderr to the run's ``worker.log`` instead of the terminal;
- sends every engine event, then ``{"type": "exit"}``; an unexpected exception is sent as
  ``{"type": "error", "message", "traceback"}`` (bad input as ``{"type": "error", "message"}``).

Progress events (``epoch``) are dropped when the queue is full; measurements and the end are
not (they are also on disk in the run directory).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

QUEUE_SIZE = 2000
NICENESS = 5
DROPPABLE = {"epoch"}


class _StopOrOrphaned:
    """is_set() when the parent asked to stop or has died."""

    def __init__(self, stop: Any, parent_pid: int) -> None:
        self.stop, self.parent_pid = stop, parent_pid

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent_pid


def _redirect_output(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _child(raw_config: dict[str, Any] | None, events: Any, stop: Any, pause: Any, parent_pid: int,
           info: dict[str, Any] | None = None, resume_dir: str | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICENESS)  # the UI answers keys first; the run takes every cycle it leaves
    except OSError:
        pass
    _redirect_output(os.devnull)
    flag = _StopOrOrphaned(stop, parent_pid)

    def send(event: dict[str, Any]) -> None:
        if event["type"] == "start":
            _redirect_output(os.path.join(event["run_dir"], "worker.log"))
        while True:
            try:
                events.put(event, timeout=0.2)
                return
            except queue.Full:
                if event["type"] in DROPPABLE or flag.is_set():
                    return

    try:
        from ibtui.config import config_from_dict
        from ibtui.engine.runner import execute, resume
        from ibtui.engine.signals import stop_on_signals
        from ibtui.errors import UserError

        try:  # terminate() (SIGTERM) or a closed terminal (SIGHUP) stops the run cleanly: `stopped`
            with stop_on_signals((signal.SIGTERM, signal.SIGHUP)):
                if resume_dir is not None:
                    resume(resume_dir, on_event=send, stop=flag, pause=pause)
                else:
                    execute(config_from_dict(raw_config), on_event=send, stop=flag, pause=pause, info=info)
        except UserError as exc:
            send({"type": "error", "message": str(exc)})
    except BaseException as exc:  # noqa: BLE001 - everything goes to the UI, nothing to the terminal
        send({"type": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    finally:
        send({"type": "exit"})


@dataclass
class Worker:
    """Handle on a running engine process."""

    process: Any
    events: Any
    stop_event: Any
    pause_event: Any

    exited: bool = False  # the child said its last word ({"type": "exit"})

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def running(self) -> bool:
        """Still working on the run (alive and not yet past its final event)."""
        return self.alive and not self.exited

    def pause(self, paused: bool) -> None:
        (self.pause_event.set if paused else self.pause_event.clear)()

    @property
    def paused(self) -> bool:
        return self.pause_event.is_set()

    def stop(self) -> None:
        self.stop_event.set()
        self.pause_event.clear()

    def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return None
        if event.get("type") == "exit":
            self.exited = True
        return event

    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask to stop, wait, then terminate and finally kill: never leaves the process behind."""
        self.stop()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2.0)


def context() -> Any:
    """The spawn context; its resource tracker started before any UI owns the terminal."""
    ctx = mp.get_context("spawn")
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    return ctx


def start_worker(raw_config: dict[str, Any] | None, info: dict[str, Any] | None = None,
                 resume_dir: str | None = None) -> Worker:
    """Spawn the engine on a resolved config dict (``Config.to_dict()``), recording ``info`` in the
    run's meta.json; or, with ``resume_dir``, resume that run in place."""
    ctx = context()
    events = ctx.Queue(maxsize=QUEUE_SIZE)
    stop, pause = ctx.Event(), ctx.Event()
    process = ctx.Process(target=_child, args=(raw_config, events, stop, pause, os.getpid(), info, resume_dir),
                          name="ibtui-worker", daemon=True)
    process.start()
    return Worker(process, events, stop, pause)
