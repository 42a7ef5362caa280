"""ibtui: information-plane research in the terminal.

One headless engine (``ibtui.engine``), estimators of mutual information in bits
(``ibtui.estimators``) and several front doors (``ibtui.cli``). The Python API:

- ``ibtui.load_run(path) -> Run`` and ``ibtui.load_sweep(path) -> Sweep``: read a run or sweep
  directory (``ibtui.rundir.reader``; no torch import);
- ``ibtui.Recorder``: the information plane of any PyTorch model, in your own training loop;
- ``ibtui.figures``: publication figures (matplotlib, ``pip install 'ibtui[plot]'``).
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_run": "ibtui.rundir.reader", "load_sweep": "ibtui.rundir.reader", "Run": "ibtui.rundir.reader",
    "Sweep": "ibtui.rundir.reader", "PlaneData": "ibtui.rundir.reader", "Recorder": "ibtui.recorder",
    "UserError": "ibtui.errors",
}


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use (``import ibtui`` stays instant)."""
    import importlib

    if name == "figures":
        return importlib.import_module("ibtui.figures")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ibtui' has no attribute {name!r}")


__all__ = ["__version__", "figures", *_LAZY]
