"""torch, imported on first use.

The estimator modules hold the registry, the parameters and their validation, which the CLI and
the app need without paying for torch's import (seconds on a small machine): they refer to
``torch`` and ``nn`` through these stand-ins, which import torch the first time an estimate is
computed, and use ``no_grad`` for ``@torch.no_grad()``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable


class _Lazy:
    """Stands for a module until first use; then every attribute is the module's own."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


torch: Any = _Lazy("torch")
nn: Any = _Lazy("torch.nn")


def no_grad(fn: Callable) -> Callable:
    """``@torch.no_grad()`` without importing torch before the first call."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch as real

        with real.no_grad():
            return fn(*args, **kwargs)

    return wrapper
