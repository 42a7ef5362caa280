"""A sweep's spec: a preset × a grid of overrides, and its cells (names, overrides)."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


from ibtui.config import Config, load_preset
from ibtui.rundir.store import CONFIG, CURVES, CURVES_LOG, EVENTS, LOG, META, PLANES
from ibtui.errors import UserError

SWEEP = "sweep.json"
RESULTS = "results.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
SHIPPED = (META, CONFIG, EVENTS, CURVES_LOG, PLANES, CURVES, LOG)
"""Files a Ray task sends back when its node does not share the driver's file system."""


def split_values(text: str) -> list[str]:
    """Split ``a,b,[1,2],"x,y"`` at the commas outside brackets and quotes."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def parse_grid(item: str) -> tuple[str, list[str]]:
    """``KEY=v1,v2,...`` → (KEY, [v1, v2, ...]); values stay text (parsed as ``--set`` values)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--grid '{item}' is not of the form KEY=v1,v2,... (e.g. model.activation=tanh,relu)")
    values = split_values(text)
    if any(not v for v in values):
        raise UserError(f"--grid '{item}' has an empty value")
    if len(set(values)) != len(values):
        raise UserError(f"--grid '{item}' repeats a value")
    return key, values


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its directory name and its overrides ``((key, value), ...)``."""

    name: str
    overrides: tuple[tuple[str, str], ...]

    @property
    def items(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.overrides]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=._+-]+", "-", text).strip("-")


def cell_name(index: int, overrides: Iterable[tuple[str, str]], width: int) -> str:
    """``03-activation=relu,bin_size=0.3``: the index keeps names unique, the rest says what it is."""
    parts = ",".join(_slug(f"{k.split('.')[-1]}={v}") for k, v in overrides)
    return f"{index:0{width}d}-{parts}"[:120] if parts else f"{index:0{width}d}"


@dataclass
class SweepSpec:
    """What the user asked for: a preset, grid axes, fixed overrides, seeds per cell."""

    preset: str
    grid: list[tuple[str, list[str]]]
    sets: list[str] = field(default_factory=list)
    seeds: int | None = None

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.grid]
        if len(set(keys)) != len(keys):
            raise UserError(f"a key appears in two --grid options: {', '.join(sorted({k for k in keys if keys.count(k) > 1}))}")
        fixed = {s.partition("=")[0].strip() for s in self.sets}
        both = fixed.intersection(keys)
        if both:
            raise UserError(f"{', '.join(sorted(both))} is both a --grid axis and a --set override")
        if self.seeds is not None and self.seeds < 1:
            raise UserError(f"--seeds must be >= 1; got {self.seeds}")

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "grid": [[k, list(v)] for k, v in self.grid], "sets": list(self.sets),
                "seeds": self.seeds}

    @property
    def sweep_id(self) -> str:
        """Stable for the same command: ``<preset>-sweep-<8 hex digits of the spec>``."""
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{_slug(Path(self.preset).stem)}-sweep-{digest}"

    def cells(self) -> list[Cell]:
        combos = list(itertools.product(*[[(k, v) for v in values] for k, values in self.grid]))
        width = len(str(max(len(combos) - 1, 0)))
        return [Cell(cell_name(i, combo, width), tuple(combo)) for i, combo in enumerate(combos)]

    def config(self, cell: Cell, threads: int = 0, *extra: str) -> Config:
        """The cell's resolved configuration (UserError for a bad key or value); ``threads`` > 0
        caps its torch threads; ``extra`` overrides come last."""
        seeds = [f"train.seeds={self.seeds}"] if self.seeds is not None else []
        cap = [f"train.threads={threads}"] if threads else []
        return load_preset(self.preset, [*self.sets, *cell.items, *seeds, *cap, *extra])
