"""Property-based bad input: presets, overrides and corrupted run directories never give a traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from ibtui.config import SECTIONS, Config, load_preset
from ibtui.engine.runner import execute
from ibtui.errors import UserError
from ibtui.tui.plots import curves_figure, plane_figure, schedule_figure
from ibtui.tui.state import RunView

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

FIELD_KEYS = [f"{section}.{f}" for section, cls in SECTIONS.items() for f in cls.__dataclass_fields__]
FIELD_KEYS += ["estimators.binning.bin_size", "estimators.kde.noise_variance", "estimators.kde.chunk_size",
               "estimators.binning_fixed.bins", "estimators.binning_fixed.low", "estimators.kde", "preset"]
values = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "[]", "[1,2]", "[0]", '""', '"x"', "nan", "inf", "-0", "1e999", "{}", "[[1]]",
                     "cuda:0", "mat:/nonexistent", "npz:/etc/passwd", "../../x", "\x00", "é"]),
    st.text(max_size=12),
)


def one_line_user_error(call):
    try:
        return call()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


@FUZZ
@given(key=st.one_of(st.sampled_from(FIELD_KEYS), st.text(max_size=20)), value=values)
def test_any_override_gives_a_valid_config_or_a_one_line_error(key, value):
    cfg = one_line_user_error(lambda: load_preset("quick", [f"{key}={value}"]))
    assert cfg is None or isinstance(cfg, Config)


toml_scalars = st.one_of(st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(), st.booleans(),
                         st.text(max_size=10), st.lists(st.integers(min_value=-10, max_value=10), max_size=4))
section_names = st.sampled_from([*SECTIONS, "estimators", "bogus"])
field_names = st.sampled_from([f for cls in SECTIONS.values() for f in cls.__dataclass_fields__] + ["zzz"])
preset_docs = st.dictionaries(
    section_names,
    st.one_of(toml_scalars, st.dictionaries(st.one_of(field_names, st.sampled_from(["binning", "kde", "nope"])),
                                            st.one_of(toml_scalars, st.dictionaries(st.sampled_from(
                                                ["bin_size", "bins", "noise_variance", "chunk_size", "x"]),
                                                toml_scalars, max_size=3)), max_size=5)),
    max_size=5)


@FUZZ
@given(doc=preset_docs)
def test_any_preset_file_gives_a_valid_config_or_a_one_line_error(tmp_path, doc):
    path = tmp_path / "fuzz.toml"
    path.write_text(tomli_w.dumps(doc))
    cfg = one_line_user_error(lambda: load_preset(str(path)))
    assert cfg is None or isinstance(cfg, Config)


# ----------------------------------------------------------------------------- corrupted run directories


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return Path(execute(tiny_config(runs, estimators={"binning": {}, "binning_fixed": {}}))["run_dir"])


def digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(["meta.json", "events.jsonl", "curves.npz", "config.toml"]),
              st.floats(min_value=0, max_value=1)),
    st.tuples(st.just("garbage"), st.sampled_from(["meta.json", "events.jsonl", "curves.npz"]), st.binary(max_size=64)),
    st.tuples(st.just("delete"), st.sampled_from(["meta.json", "events.jsonl", "curves.npz", "config.toml"]), st.none()),
    st.tuples(st.just("meta_field"), st.sampled_from(["layers", "planes", "epochs_total", "epochs_done", "h_x", "h_y",
                                                      "status", "error", "id"]), json_values),
    st.tuples(st.just("event_field"), st.sampled_from(["epoch", "planes", "schedule", "train_acc"]), json_values),
)


def corrupt(run: Path, how) -> None:
    kind, name, arg = how
    if kind == "truncate":
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * arg)])
    elif kind == "garbage":
        (run / name).write_bytes(arg)
    elif kind == "delete":
        (run / name).unlink()
    elif kind == "meta_field":
        meta = json.loads((run / "meta.json").read_text())
        meta[name] = arg
        (run / "meta.json").write_text(json.dumps(meta))
    else:
        lines = (run / "events.jsonl").read_text().splitlines()
        event = json.loads(lines[1])
        event[name] = arg
        lines[1] = json.dumps(event)
        (run / "events.jsonl").write_text("\n".join(lines) + "\n")


@FUZZ
@given(how=corruptions)
def test_a_corrupted_run_replays_or_fails_with_one_line_and_is_left_untouched(pristine_run, tmp_path_factory, how):
    run = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(pristine_run, run)
    corrupt(run, how)
    before = digest(run)
    view = one_line_user_error(lambda: RunView.from_run_dir(run))
    if view is not None:
        for plane in view.plane_names or [""]:
            plane_figure(view, plane, 60, 20)
            plane_figure(view, plane, 60, 20, cursor=3)
        schedule_figure(view, 40, 12)
        curves_figure(view, 40, 12)
        view.follow()
        view.refresh_meta()
    assert digest(run) == before


def test_a_symlink_out_of_the_run_is_refused(pristine_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"status": "done", "layers": ["x"]}))
    (run / "meta.json").unlink()
    (run / "meta.json").symlink_to(secret)
    with pytest.raises(UserError, match="outside the run directory"):
        RunView.from_run_dir(run)


def test_a_pickled_checkpoint_is_never_loaded(pristine_run, tmp_path):
    import numpy as np

    from ibtui.engine.runner import resume
    from ibtui.rundir.store import checkpoint_path

    run = tmp_path / "run"
    shutil.copytree(pristine_run, run)
    meta = json.loads((run / "meta.json").read_text())
    meta["status"] = "stopped"
    (run / "meta.json").write_text(json.dumps(meta))
    for path in (run / "checkpoints").iterdir():
        np.savez(path, evil=np.array([object()], dtype=object))  # needs pickle to load
    with pytest.raises(UserError, match="no complete checkpoint"):
        resume(run)
    assert checkpoint_path(run, 0).is_file()
