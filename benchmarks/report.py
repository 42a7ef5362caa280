"""Shared by the benchmark scripts: the machine's description and writing a report."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def header() -> dict:
    """When and where: date, platform and CPU count."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), "cpus": os.cpu_count()}


def write_report(report: dict, out: str | Path) -> None:
    """Write ``report`` as JSON to ``out`` (folders made as needed) and print it."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    path.write_text(text + "\n")
    print(text)
