"""A crafted sweep directory (its sweep.json or results.jsonl) gives one error line or is read
past, never a traceback, and nothing is written outside it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ibtui.cli import app

TINY = ["--set", "train.epochs=1", "--set", "estimators.kde=false", "--set", 'train.device="cpu"']


def sweep(tmp_path, name="crafted"):
    return CliRunner().invoke(app, ["sweep", "-p", "quick", *TINY, "--runs-dir", str(tmp_path), "--name", name,
                                    "--workers", "1", "--quiet"])


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[1, 2, 3]", b"[" * 100_000 + b"]" * 100_000],
                         ids=["not-utf8", "a-list", "deep-nesting"])
def test_a_crafted_sweep_json_is_one_error_line(tmp_path, content):
    (tmp_path / "crafted").mkdir()
    (tmp_path / "crafted" / "sweep.json").write_bytes(content)
    result = sweep(tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert sorted(p.name for p in (tmp_path / "crafted").iterdir()) == ["sweep.json"]


def test_a_deeply_nested_line_in_results_jsonl_is_skipped(tmp_path):
    from ibtui.engine.sweep import Sweep, SweepSpec

    job = Sweep(SweepSpec("quick", [], TINY[1::2], None), tmp_path, "crafted")
    job.open()
    (job.root / "results.jsonl").write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert job.recorded_attempts() == {}


def test_a_ray_sweep_without_ray_leaves_no_sweep_directory(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError: Ray missing
    result = CliRunner().invoke(app, ["sweep", "-p", "quick", *TINY, "--runs-dir", str(tmp_path), "--name", "r",
                                      "--ray-address", "127.0.0.1:1", "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.startswith("error:") and "Ray" in result.output
    assert not (tmp_path / "r").exists()


def test_a_ray_sweep_to_an_unreachable_address_fails_in_one_line_and_leaves_no_sweep_directory(tmp_path):
    import socket
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is not installed: the unreachable-address check needs it")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "ibtui", "sweep", "-p", "quick", *TINY, "--runs-dir", str(tmp_path),
                             "--name", "r", "--ray-address", f"127.0.0.1:{port}", "--quiet"],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # Ray alone retries for minutes
    assert result.returncode == 2, result.stderr[-1000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot connect to Ray at 127.0.0.1:{port}"), result.stderr
    assert not any(tmp_path.iterdir())
