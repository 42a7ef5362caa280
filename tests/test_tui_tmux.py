"""The real `ibtui` in a real terminal (tmux): launch → live updates → stop → replay → quit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_hostile import pristine  # noqa: F401 (a fixture: a small stopped run to damage)

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

PRESET = """description = "tmux test: a long 12-bit run with cheap binning"
[train]
epochs = 100000
device = "cpu"
[schedule]
kind = "every_n"
every = 5
[estimators.binning]
bin_size = 0.07
"""


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "ibtui")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen())
            if match:
                return match
            time.sleep(0.25)
        raise AssertionError(f"{pattern!r} never appeared; the screen shows:\n{self.screen()}")


def test_launch_watch_stop_and_replay_in_a_real_terminal(tmp_path):
    (tmp_path / "config" / "presets").mkdir(parents=True)
    (tmp_path / "config" / "presets" / "quick.toml").write_text(PRESET)  # the home screen's default preset
    tmux = Tmux(f"ibtui-test-{os.getpid()}")
    command = f"{sys.executable} -m ibtui; sleep 60"  # this checkout's ibtui (an installed script may be another's)
    env = f"IBTUI_CONFIG_DIR={tmp_path / 'config'} TERM=xterm-256color PYTHONPATH={Path(__file__).parents[1]}"
    tmux("new-session", "-d", "-s", "ibtui", "-x", "120", "-y", "40", f"cd {tmp_path} && env {env} {command}")
    try:
        tmux.wait_for(r"Presets")
        tmux.wait_for(r"tmux test: a long 12-bit run")
        tmux("send-keys", "-t", "ibtui", "l")
        first = int(tmux.wait_for(r"running · epoch (\d+)/100000").group(1))
        tmux.wait_for(r"binning · epoch \d+")
        deadline = time.monotonic() + 60
        while int(tmux.wait_for(r"running · epoch (\d+)/").group(1)) <= first + 5:  # live updates
            assert time.monotonic() < deadline, tmux.screen()
            time.sleep(0.25)
        tmux("send-keys", "-t", "ibtui", "s")
        tmux.wait_for(r"stopped · epoch \d+")
        (run,) = (tmp_path / "runs").iterdir()
        assert '"status": "stopped"' in (run / "meta.json").read_text()

        tmux("send-keys", "-t", "ibtui", "Escape")
        tmux.wait_for(r"quick-\S+\s+stopped\s+\d+/100000\s+quick")
        tmux("send-keys", "-t", "ibtui", "Tab")
        time.sleep(0.3)
        tmux("send-keys", "-t", "ibtui", "o")
        tmux.wait_for(r"stopped · epoch \d+/100000 · estimator binning · \d+ measured")
        tmux("send-keys", "-t", "ibtui", "Home")
        tmux.wait_for(r"binning · epoch 0\b")
        tmux("send-keys", "-t", "ibtui", "q")
        deadline = time.monotonic() + 20
        while "Presets" in tmux.screen() or "measured" in tmux.screen():
            assert time.monotonic() < deadline, tmux.screen()
            time.sleep(0.25)
    finally:
        tmux("kill-server")


def test_a_launched_run_keeps_going_after_esc_and_reopening_it_gives_stop_again(tmp_path):
    (tmp_path / "config" / "presets").mkdir(parents=True)
    (tmp_path / "config" / "presets" / "quick.toml").write_text(PRESET)
    tmux = Tmux(f"ibtui-test-esc-{os.getpid()}")
    command = f"{sys.executable} -m ibtui; sleep 60"  # this checkout's ibtui (the test's own interpreter)
    env = f"IBTUI_CONFIG_DIR={tmp_path / 'config'} TERM=xterm-256color PYTHONPATH={Path(__file__).parents[1]}"
    tmux("new-session", "-d", "-s", "ibtui", "-x", "120", "-y", "40", f"cd {tmp_path} && env {env} {command}")
    try:
        tmux.wait_for(r"tmux test: a long 12-bit run")
        tmux("send-keys", "-t", "ibtui", "l")
        tmux.wait_for(r"running · epoch (\d+)/100000")
        tmux("send-keys", "-t", "ibtui", "Escape")  # back to the run list: the run goes on
        tmux.wait_for(r"Runs in runs/")
        at_home = int(tmux.wait_for(r"running\s+(\d+)/100000\s+quick").group(1))
        deadline = time.monotonic() + 60
        while int(tmux.wait_for(r"running\s+(\d+)/100000\s+quick").group(1)) <= at_home:  # still measured, on disk
            assert time.monotonic() < deadline, tmux.screen()
            time.sleep(0.5)
        tmux("send-keys", "-t", "ibtui", "o")  # reopen it: the live screen, not a replay
        reopened = int(tmux.wait_for(r"running · epoch (\d+)/100000").group(1))
        assert reopened > at_home
        tmux.wait_for(r"s Stop run")  # the footer offers stop again
        tmux("send-keys", "-t", "ibtui", "s")
        tmux.wait_for(r"stopped · epoch \d+")
        (run,) = (tmp_path / "runs").iterdir()
        deadline = time.monotonic() + 30
        while '"status": "stopped"' not in (run / "meta.json").read_text():
            assert time.monotonic() < deadline, (run / "meta.json").read_text()
            time.sleep(0.25)
        tmux("send-keys", "-t", "ibtui", "q")
        deadline = time.monotonic() + 20
        while "measured" in tmux.screen():
            assert time.monotonic() < deadline, tmux.screen()
            time.sleep(0.25)
    finally:
        tmux("kill-server")


@pytest.mark.parametrize("case", ["markup in meta", "fifo meta.json", "deep json events", "pickled curves.npz"])
def test_replay_of_a_crafted_run_in_a_real_terminal_shows_it_or_exits_with_one_line(tmp_path, pristine, case):
    """The hostile corpus (tests/test_hostile.py), once through the real app: the run's screen with
    its text shown as text, or the app never starts and says why in one `error:` line; never a
    hang or a blank screen."""
    from test_hostile import crafted

    run, _ = crafted(pristine, tmp_path, case)
    tmux = Tmux(f"ibtui-test-crafted-{os.getpid()}")
    command = f"{sys.executable} -m ibtui replay {run}; echo exit=$?; sleep 60"
    env = f"TERM=xterm-256color PYTHONPATH={Path(__file__).parents[1]}"
    tmux("new-session", "-d", "-s", "ibtui", "-x", "120", "-y", "40", f"cd {tmp_path} && env {env} {command}")
    try:
        shown = tmux.wait_for(r"exit=2|measured")
        if shown.group(0) == "exit=2":
            joined = tmux("capture-pane", "-p", "-J", "-t", "ibtui")  # a long line wrapped by the terminal, joined
            errors = [line for line in joined.splitlines() if line.strip() and not line.startswith("exit=")]
            assert len(errors) == 1 and errors[0].startswith("error:"), tmux.screen()
            return
        if case == "markup in meta":
            tmux.wait_for(re.escape("[bold red]boom[/]"))  # the id, as text
        tmux("send-keys", "-t", "ibtui", "q")
        tmux.wait_for(r"exit=0")
    finally:
        tmux("kill-server")
