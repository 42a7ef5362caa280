"""Runs launched from the app, held by the app (not by a screen): their worker handles and views.

A :class:`LiveRun` drains its worker's events on a thread of the app's (a Textual worker of the
app, so it outlives the run screen: ``esc`` leaves the run going and its state growing), folds
them into its :class:`~ibtui.tui.state.RunView` on the UI thread, and tells the screens showing
it. Reopening the run from the run list shows the same view, with pause and stop again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ibtui.tui.state import RunView

BATCH = 1000
BATCH_WINDOW_S = 0.1  # events reach the UI at most ten times a second, in batches

Listener = Callable[[list[dict[str, Any]], bool, str], None]  # (events, was running, status before)


def same_path(a: str | Path | None, b: str | Path | None) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


class LiveRun:
    """One engine worker and the view its events build."""

    def __init__(self, worker: Any, view: RunView) -> None:
        self.worker, self.view = worker, view
        self.listeners: list[Listener] = []
        self.started = False

    @property
    def running(self) -> bool:
        """The worker still works on the run (alive and not past its last event)."""
        return bool(self.worker.running)

    def shows(self, path: str | Path) -> bool:
        """Is this the run directory ``path``?"""
        return same_path(self.view.run_dir, path)

    def listen(self, listener: Listener) -> None:
        if listener not in self.listeners:
            self.listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def deliver(self, events: list[dict[str, Any]]) -> None:
        """Fold ``events`` into the view (UI thread), then tell the listening screens."""
        was_running, was_status = self.view.running, self.view.status
        for event in events:
            self.view.apply(event)
        for listener in list(self.listeners):
            listener(events, was_running, was_status)

    def drain(self, cancelled: Callable[[], bool], post: Callable[[list[dict[str, Any]]], None]) -> None:
        """Move the worker's events to ``post`` in batches until the worker is gone (then a
        ``crashed`` event when it died without its ``exit``) or ``cancelled()``."""
        seen_exit = False
        while not cancelled():
            first = self.worker.get(timeout=0.1)
            if first is None:
                if not self.worker.alive:
                    leftovers = []
                    while (event := self.worker.get(timeout=0.05)) is not None:
                        leftovers.append(event)
                    seen_exit |= any(e.get("type") == "exit" for e in leftovers)
                    if not seen_exit:
                        code = self.worker.process.exitcode
                        leftovers.append({"type": "crashed", "message": f"the worker process died (exit code {code})"})
                    post(leftovers)
                    return
                continue
            batch, deadline = [first], time.monotonic() + BATCH_WINDOW_S
            while len(batch) < BATCH:  # what arrives within the window: one UI wake-up for them all
                event = self.worker.get(timeout=max(deadline - time.monotonic(), 0.0))
                if event is None:
                    break
                batch.append(event)
            seen_exit |= any(e.get("type") == "exit" for e in batch)
            post(batch)

    def start(self, app: Any) -> None:
        """Drain on a thread worker of ``app`` (it outlives every screen; cancelled when the app exits)."""
        if self.started:
            return
        self.started = True
        from textual.worker import get_current_worker

        def post(batch: list[dict[str, Any]]) -> None:
            try:
                app.call_from_thread(self.deliver, batch)
            except RuntimeError:  # the app is closing
                pass

        def run() -> None:
            me = get_current_worker()
            self.drain(lambda: me.is_cancelled, post)

        app.run_worker(run, thread=True, group="live-runs", name="drain", exit_on_error=False)


def request_stop_of(path: str | Path) -> str:
    """Ask a run that another process writes to stop after its current epoch (a stop request in its
    directory; ``ibtui.rundir.store.request_stop``). Returns "requested", "already requested",
    "not running", or a one-line reason it cannot be asked."""
    from ibtui.errors import UserError
    from ibtui.rundir.reader import read_run_meta, writer_alive
    from ibtui.rundir.store import request_stop

    try:
        if not writer_alive(Path(path), read_run_meta(path)):
            return "not running"
        return "requested" if request_stop(Path(path)) else "already requested"
    except UserError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot ask it to stop: {exc.strerror or exc}"
