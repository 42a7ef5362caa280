"""What tells runs apart: overrides of the preset, labels, names, tags, notes, and the run list's times."""

from __future__ import annotations

import pytest

from ibtui.config import load_preset
from ibtui.errors import UserError
from ibtui.runinfo import (ago, check_tags, clean_info, config_overrides, differing_keys, duration, flatten,
                           parse_stamp, run_info, run_label)


def test_overrides_are_the_resolved_settings_that_differ_from_the_preset():
    base = load_preset("quick").to_dict()
    cfg = load_preset("quick", ["model.activation=relu", "train.epochs=300", "estimators.kde=false",
                                'store.runs_dir="elsewhere"'])
    overrides = config_overrides(base, cfg.to_dict())
    assert overrides == {"model.activation": "relu", "train.epochs": 300, "estimators.kde": False}
    assert run_label("quick", overrides) == "quick · relu · 300 epochs · no kde"


def test_a_label_leaves_out_the_device_but_meta_records_it():
    base = load_preset("quick").to_dict()
    overrides = config_overrides(base, load_preset("quick", ['train.device="cpu"']).to_dict())
    assert overrides == {"train.device": "cpu"} and run_label("quick", overrides) == "quick"


def test_bad_names_tags_and_notes_are_refused():
    for name, tags, note in (("x" * 81, [], None), ("a\x1b[2Jb", [], None), (None, ["has space"], None),
                             (None, [], "two\nlines")):
        with pytest.raises(UserError):
            run_info({}, {}, name, tags, note)
    assert check_tags(["a", "b,c", "a"]) == ["a", "b", "c"]


def test_a_hostile_meta_keeps_only_well_formed_name_tags_note_and_overrides():
    info = clean_info({"name": "ok\x1b[31m", "tags": ["good", "bad tag", 3, "x" * 99], "note": ["not text"],
                       "overrides": {"model.activation": "relu", "bad key!": 1, "train.epochs": {"deep": 1},
                                     "train.lr": float("nan")}})
    assert info == {"name": "ok [31m", "tags": ["good"], "note": None, "overrides": {"model.activation": "relu"}}


def test_differing_keys_are_those_not_equal_in_every_run():
    a = flatten(load_preset("quick").to_dict())
    b = flatten(load_preset("quick", ["model.activation=relu", 'store.runs_dir="x"']).to_dict())
    assert differing_keys([a, b]) == ["model.activation"]
    assert differing_keys([a]) == []


def test_times_read_relative_and_durations_human():
    start = parse_stamp("20261203T150000Z")
    assert start is not None and parse_stamp("garbage") is None
    assert ago(30) == "just now" and ago(185) == "3 min ago" and ago(7300) == "2 h ago" and ago(5 * 86400) == "5 days ago"
    assert duration(42.4) == "42 s" and duration(185) == "3 min 5 s" and duration(7800) == "2 h 10 min"
