"""Stop signals (SIGINT, SIGTERM, SIGHUP) as a clean stop of a run, never in the middle of a write.

Assumptions: CPython runs Python signal handlers in the main thread, between bytecodes; everything
here acts in the main thread only (elsewhere it does nothing). A front door installs
:func:`on_stop_signal` with :func:`stop_on_signals` (the CLI for all three signals, the app's worker
process for SIGTERM and SIGHUP).

The handler raises ``KeyboardInterrupt`` (the runner records ``stopped``) unless stop signals are
*held*: then it only remembers the signal. Raising itself holds them, so whoever catches that
``KeyboardInterrupt`` finishes its writes undisturbed by a second signal, and resets the hold with
:func:`reset` when done. :func:`deferred` holds them around one section (the run directory being
created, a checkpoint with its event line) and takes a remembered stop when the section ends.

The library's own SIGINT handler (``signal.default_int_handler``) is replaced by :func:`on_stop_signal`
for the duration of a run (:func:`stop_on_signals` in the runner), so a library caller gets the
same guarantees for Ctrl+C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Iterator

STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                                      if hasattr(signal, name))


class _State:
    held = 0  # > 0: stop signals are remembered, not raised
    pending: int | None = None  # a stop signal remembered while held


_state = _State()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def on_stop_signal(signum: int, frame: Any) -> None:
    """Signal handler: remember the signal while held, else hold and raise KeyboardInterrupt."""
    if _state.held > 0:
        _state.pending = signum
        return
    _state.held += 1  # the catcher's clean-up is not interrupted by a second signal
    raise KeyboardInterrupt


def hold() -> int:
    """Hold stop signals from now on; returns the previous level (for :func:`reset`)."""
    level = _state.held
    if _main_thread():
        _state.held = level + 1
    return level


def release(level: int) -> None:
    """Back to ``level``; at level 0 a remembered stop is taken now (KeyboardInterrupt)."""
    if not _main_thread():
        return
    _state.held = level
    if level == 0 and _state.pending is not None:
        _state.pending = None
        _state.held += 1  # as the handler does
        raise KeyboardInterrupt


def reset(level: int) -> None:
    """Back to ``level`` and forget a remembered stop (the caller has stopped already)."""
    if _main_thread():
        _state.held, _state.pending = level, None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals during the block; a stop that arrived in it is taken when it ends
    (not when it ends by an exception: that one wins)."""
    level = hold()
    try:
        yield
    except BaseException as exc:
        if _main_thread():  # a KeyboardInterrupt on its way out keeps holding, for its catcher
            _state.held = level + isinstance(exc, KeyboardInterrupt)
        raise
    release(level)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS, only_replace_default: bool = False) -> Iterator[None]:
    """Install :func:`on_stop_signal` for ``signals`` during the block (main thread only).
    An ignored signal stays ignored (``nohup``, a shell's background job). ``only_replace_default``:
    only where Python's own SIGINT handler is installed (a library caller's Ctrl+C), leaving any
    handler of the caller's alone."""
    saved: dict[int, Any] = {}
    if _main_thread():
        for sig in signals:
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN or (only_replace_default and current is not signal.default_int_handler):
                continue
            saved[sig] = signal.signal(sig, on_stop_signal)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- test hook

PAUSE_ENV = "IBTUI_TEST_PAUSE_AT"
"""For tests only: ``phase[:seconds],...`` makes the run stop for a while (default 3 s) the first
time it reaches each named phase, after printing ``ibtui-test-pause: <phase>`` on stderr, so a test
can send a signal at that instant. Phases: ``loading`` (the command has just started, before its
imports), ``before-create`` (nothing on disk yet), ``created`` (the
run directory and its meta.json exist), ``resume-opened`` (a resumed run marked running again),
``epoch`` (inside an epoch, trained but not yet recorded), ``measure`` (inside a measurement),
``checkpoint`` (a checkpoint written, its event line not yet), ``final`` (the final arrays written,
the final meta.json not yet)."""

_paused: set[str] = set()


def pause_point(phase: str) -> None:
    """The test hook of :data:`PAUSE_ENV` (nothing when it is unset)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec or phase in _paused:
        return
    for item in spec.split(","):
        name, _, seconds = item.strip().partition(":")
        if name == phase:
            _paused.add(phase)
            sys.stderr.write(f"ibtui-test-pause: {phase}\n")
            sys.stderr.flush()
            time.sleep(float(seconds or 3.0))
            return
