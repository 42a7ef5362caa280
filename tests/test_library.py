"""ibtui as a library: light imports, ValueError for bad parameters, estimator plugins, import layers."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_estimators_config_and_the_reader_load_without_torch():
    result = run_python("""
        import sys
        import ibtui, ibtui.estimators, ibtui.config, ibtui.rundir.reader, ibtui.cli
        from ibtui.config import load_preset
        load_preset("saxe-tanh")
        load_preset("mnist-cnn")  # a CNN's layer list is checked without torch too
        print(sorted(m for m in ("torch", "scipy", "textual", "matplotlib") if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_an_estimate_imports_torch_when_it_is_computed():
    result = run_python("""
        import numpy as np
        from ibtui.estimators import Binning, MISet
        x = np.eye(4, dtype=np.float32)
        print(Binning(0.5).estimate([MISet.from_arrays(x, np.arange(4) % 2).x], MISet.from_arrays(x, np.arange(4) % 2)))
    """)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind, params", [("kde", {"noise_variance": -1.0}), ("binning", {"bin_size": 0.0}),
                                          ("binning_fixed", {"bins": 1}), ("ksg", {"k": 0})])
def test_bad_estimator_parameters_raise_value_error(kind, params):
    from ibtui.errors import UserError
    from ibtui.estimators import ESTIMATORS

    with pytest.raises(ValueError) as info:
        ESTIMATORS[kind](**params)
    assert isinstance(info.value, UserError)  # the front doors print it as one line


def test_a_third_party_estimator_registers_through_its_entry_point(tmp_path):
    package = tmp_path / "myest"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from typing import ClassVar
        import numpy as np
        from ibtui.estimators import Estimator

        @dataclass(frozen=True)
        class Zero(Estimator):
            kind: ClassVar[str] = "zero"
            summary: ClassVar[str] = "always zero bits (a plugin)"

            def estimate(self, layers, mi_set):
                return {self.kind: (np.zeros(len(layers)), np.zeros(len(layers)))}
    """))
    info = tmp_path / "myest-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myest\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ibtui.estimators]\nzero = myest:Zero\n")
    result = subprocess.run([sys.executable, "-m", "ibtui", "estimators"], capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "zero" in result.stdout and "a plugin" in result.stdout


LAYERS = {  # package → packages it must not import (at module level or anywhere)
    "ibtui/engine": ("textual", "ibtui.tui", "plotext", "ibtui.cli"),
    "ibtui/estimators": ("textual", "ibtui.tui", "ibtui.engine", "ibtui.rundir", "ibtui.cli", "torch"),
    "ibtui/rundir": ("textual", "ibtui.tui", "torch", "ibtui.cli", "matplotlib"),
    "ibtui/figures.py": ("textual", "ibtui.tui", "torch", "plotext"),
    "ibtui/export.py": ("textual", "ibtui.tui", "torch", "plotext"),
    "ibtui/recorder.py": ("textual", "ibtui.tui", "plotext"),
    "ibtui/config.py": ("textual", "ibtui.tui", "torch"),
}
LAZY_ALLOWED = {("ibtui/rundir/reader.py", "ibtui.engine.prepare"), ("ibtui/rundir/reader.py", "torch")}
"""The reader's model_at() needs the engine and torch: imported inside that function only."""


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level?) for every import statement of a file (``import torch`` inside a
    function counts as not top-level); relative imports resolved against ``ibtui``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
    return found


@pytest.mark.parametrize("where", list(LAYERS))
def test_import_layers_hold(where):
    """The headless engine never imports textual; estimators, the run reader and the figures need
    no engine and no torch at import; nothing outside ibtui/tui imports the app."""
    base = ROOT / where
    files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
    bad = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for module, top_level in imports_of(path):
            for forbidden in LAYERS[where]:
                if module == forbidden or module.startswith(forbidden + "."):
                    if forbidden == "torch" and (not top_level or (rel, "torch") in LAZY_ALLOWED):
                        continue
                    if not top_level and (rel, module) in LAZY_ALLOWED:
                        continue
                    bad.append(f"{rel} imports {module}")
    assert not bad, bad


def test_nothing_outside_the_app_imports_textual():
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in sorted((ROOT / "ibtui").rglob("*.py"))
           if "tui" not in p.relative_to(ROOT).parts[:2] and p.name != "cli.py"
           for m, top in imports_of(p) if m.split(".")[0] == "textual" or m.startswith("ibtui.tui")]
    assert not bad, bad
