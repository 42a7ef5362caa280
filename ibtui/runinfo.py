"""What tells runs apart: their overrides of the preset, a name, tags and a note (no torch, no Textual).

Every front door that starts a run (``ibtui run``, the app's launch form) records in meta.json
``overrides`` (the resolved configuration's differences from the preset's, flattened keys such
as ``model.activation`` → value), and the user's ``name``, ``tags`` and ``note``. Displays build
the run's label from them: ``quick · relu · 300 epochs``. Values read back from a run directory
are untrusted: :func:`clean_info` keeps only well-formed ones, and front doors escape them.
"""

from __future__ import annotations

import math
import re
import time
from calendar import timegm
from typing import Any, Iterable

from ibtui.errors import UserError

MAX_NAME = 80
MAX_TAG = 40
MAX_TAGS = 20
MAX_NOTE = 1000
MAX_OVERRIDES = 200
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+=-]*$")
NOT_RECORDED = ("store.runs_dir", "data.data_dir", "description", "preset")
"""Keys that do not make a run different (where it is written, where data files are read from)."""


# ----------------------------------------------------------------------------- configurations


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A TOML-shaped config dict as ``section.key`` → value (estimators: ``estimators.NAME`` → True
    and ``estimators.NAME.param`` → value)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if prefix == "estimators.":
                out[name] = True
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_overrides(base: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """The flattened keys of ``resolved`` (a ``Config.to_dict()``) whose value differs from
    ``base`` (the preset's own), in ``resolved``'s order; an estimator dropped is NAME → False.
    Where runs are written and read from is left out (``NOT_RECORDED``)."""
    a, b = flatten(base), flatten(resolved)
    out: dict[str, Any] = {}
    for key, value in b.items():
        if key in NOT_RECORDED or (key in a and a[key] == value):
            continue
        if key.startswith("estimators.") and key.count(".") == 2 and f"estimators.{key.split('.')[1]}" not in a:
            continue  # a parameter of an estimator the preset does not have: "+NAME" says it
        out[key] = value
    for key in a:
        if key.startswith("estimators.") and key.count(".") == 1 and key not in b:
            out[key] = False
    return out


def short_value(key: str, value: Any) -> str:
    """One override as a label shows it: ``300 epochs``, ``relu``, ``10-7-5``, ``no kde``, ``lr=0.0001``."""
    if isinstance(value, bool) and key.startswith("estimators.") and key.count(".") == 1:
        return ("+" if value else "no ") + key.split(".")[1]
    field = key.rsplit(".", 1)[-1]
    if isinstance(value, list):
        text = "-".join(str(v) for v in value) if key == "model.widths" else ",".join(str(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    if key == "train.epochs":
        return f"{text} epochs"
    if key == "train.seeds":
        return f"{text} networks"
    if key == "train.seed":
        return f"seed {text}"
    if key in ("model.activation", "model.widths", "data.dataset", "train.optimizer"):
        return text
    if key == "schedule.kind":
        return f"{text} schedule"
    if key.startswith("estimators."):
        return f"{key.split('.')[1]}.{field}={text}"
    return f"{field}={text}"


UNLABELLED = ("train.device", "train.threads", "store.checkpoints")
"""Recorded overrides that change where or how fast a run goes, not what it computes: not in labels."""


def run_label(preset: str, overrides: dict[str, Any]) -> str:
    """``preset · override · override`` (the preset alone when nothing was overridden)."""
    return " · ".join([preset or "?", *(short_value(k, v) for k, v in overrides.items() if k not in UNLABELLED)])


def differing_keys(configs: Iterable[dict[str, Any]]) -> list[str]:
    """Flattened keys whose value is not the same in every one of ``configs`` (flattened dicts; a
    key missing from one counts as different), in first-seen order, ``NOT_RECORDED`` left out."""
    configs = list(configs)
    if len(configs) < 2:
        return []
    keys: dict[str, None] = {}
    for cfg in configs:
        keys.update(dict.fromkeys(cfg))
    missing = object()
    return [k for k in keys if k not in NOT_RECORDED
            and len({repr(c.get(k, missing)) for c in configs}) > 1]


# ----------------------------------------------------------------------------- name, tags, note


def _no_control(text: str, what: str) -> None:
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise UserError(f"{what} must be one line of printable text")


def check_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise UserError(f"--name must be 1 to {MAX_NAME} characters; got {len(name)}")
    _no_control(name, "--name")
    return name


def check_tags(tags: Iterable[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        for part in (p.strip() for p in tag.split(",")):
            if not part:
                continue
            if len(part) > MAX_TAG or not TAG_RE.match(part):
                raise UserError(f"--tag '{part[:MAX_TAG]}' must be 1 to {MAX_TAG} letters, digits or _.:+=- "
                                "(starting with a letter or digit)")
            if part not in out:
                out.append(part)
    if len(out) > MAX_TAGS:
        raise UserError(f"at most {MAX_TAGS} tags; got {len(out)}")
    return out


def check_note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise UserError(f"--note must be at most {MAX_NOTE} characters; got {len(note)}")
    _no_control(note, "--note")
    return note


def run_info(base: dict[str, Any], resolved: dict[str, Any], name: str | None = None,
             tags: Iterable[str] = (), note: str | None = None) -> dict[str, Any]:
    """What meta.json records to tell the run apart (UserError for a bad name, tag or note)."""
    return {"name": check_name(name), "tags": check_tags(tags), "note": check_note(note),
            "overrides": config_overrides(base, resolved)}


def described(description: str, preset: str, overrides: dict[str, Any]) -> str:
    """The run's description: the preset's, led by the label when settings were overridden (the
    preset's own text would name its defaults)."""
    if not overrides:
        return description
    return f"{run_label(preset, overrides)} (preset {preset}: {description})" if description else \
        run_label(preset, overrides)


# ----------------------------------------------------------------------------- reading back


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (bool, int)) or (isinstance(value, str) and len(value) <= 200)


def clean_info(meta: dict[str, Any]) -> dict[str, Any]:
    """``name``, ``tags``, ``note`` and ``overrides`` of an untrusted meta.json, well-formed or
    dropped (None, [], {}); never raises."""
    def text(value: Any, limit: int) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return None
        value = value.strip()[:limit]
        return "".join(c if ord(c) >= 32 and not 0x7F <= ord(c) < 0xA0 else " " for c in value)

    tags = meta.get("tags")
    tags = [t for t in tags[:MAX_TAGS] if isinstance(t, str) and len(t) <= MAX_TAG and TAG_RE.match(t)] \
        if isinstance(tags, list) else []
    overrides = meta.get("overrides")
    clean: dict[str, Any] = {}
    if isinstance(overrides, dict):
        for key, value in list(overrides.items())[:MAX_OVERRIDES]:
            if not (isinstance(key, str) and 0 < len(key) <= 120 and re.match(r"^[A-Za-z0-9_.\-]+$", key)):
                continue
            if _scalar(value) or (isinstance(value, list) and len(value) <= 64 and all(_scalar(v) for v in value)):
                clean[key] = value
    return {"name": text(meta.get("name"), MAX_NAME), "tags": tags, "note": text(meta.get("note"), MAX_NOTE),
            "overrides": clean}


# ----------------------------------------------------------------------------- times


def parse_stamp(stamp: Any) -> float | None:
    """Seconds since the epoch of a run's ``20261203T153553Z`` stamp (None when it is not one)."""
    if not isinstance(stamp, str):
        return None
    try:
        return float(timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))
    except (ValueError, OverflowError):
        return None


def ago(seconds: float | None) -> str:
    """``just now``, ``3 min ago``, ``2 h ago``, ``5 days ago``."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
