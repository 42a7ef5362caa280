"""Presets, overrides and validation: every problem is one line, raised before any run starts."""

import pytest

from ibtui.config import apply_override, available_presets, config_from_dict, load_preset, tomllib
from ibtui.errors import UserError

BUNDLED = ["mnist-relu", "mnist-tanh", "quick", "saxe-relu", "saxe-tanh", "tishby-tanh", "mnist-cnn", "cifar10-cnn"]


def test_bundled_presets_are_all_found():
    assert set(BUNDLED) <= set(available_presets())


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_preset_loads_and_has_a_one_line_description(name):
    cfg = load_preset(name)
    assert cfg.preset == name
    assert cfg.description and "\n" not in cfg.description
    assert cfg.estimators


def test_saxe_presets_use_ibsgd_settings():
    for act in ("tanh", "relu"):
        cfg = load_preset(f"saxe-{act}")
        assert cfg.model.activation == act
        assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 4e-4, 256, 10000)
        assert cfg.data.shuffle and cfg.data.train_fraction == 0.8
        assert cfg.schedule.kind == "stepped"
        assert cfg.estimators["binning"].bin_size == 0.07
        assert cfg.estimators["kde"].noise_variance == 1e-3


def test_override_sets_nested_fields_with_types():
    cfg = load_preset("quick", ["train.epochs=500", "model.activation=relu", "model.widths=[8,4]",
                                "estimators.kde.noise_variance=0.1", "data.shuffle=false"])
    assert cfg.train.epochs == 500 and isinstance(cfg.train.epochs, int)
    assert cfg.model.activation == "relu"
    assert cfg.model.widths == [8, 4]
    assert cfg.estimators["kde"].noise_variance == 0.1
    assert cfg.data.shuffle is False


def test_override_accepts_comma_separated_lists():
    assert load_preset("quick", ["model.widths=12,6,3"]).model.widths == [12, 6, 3]


def test_override_can_add_and_remove_an_estimator():
    cfg = load_preset("quick", ["estimators.kde=false", "estimators.binning_fixed.bins=12"])
    assert set(cfg.estimators) == {"binning", "binning_fixed"}
    assert cfg.estimators["binning_fixed"].bins == 12


def test_int_field_accepts_a_float_literal_that_is_whole():
    assert load_preset("quick", ["train.epochs=1e3"]).train.epochs == 1000


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochz=5", "unknown key 'train.epochz'"),
        ("trian.epochs=5", "unknown override key 'trian.epochs'"),
        ("train.epochs=abc", "train.epochs must be an integer"),
        ("train.epochs=-1", "train.epochs must be >= 0"),
        ("train.lr=0", "train.lr must be a positive number"),
        ("estimators.binning_fixed.bins=0", "bins"),
        ("estimators.kde.noise_variance=0", "noise_variance"),
        ("estimators.kde.noise_variance=-1e-3", "noise_variance"),
        ("estimators.binning.bin_size=0", "bin_size"),
        ("estimators.nope.x=1", "unknown estimator 'nope'"),
        ("model.activation=swish", "model.activation must be one of"),
        ("model.widths=[10,0]", "model.widths must be integers from 1"),
        ("model.widths=[100000000]", "model.widths must be integers from 1"),
        ("train.seed=99999999999999999999", "train.seed must be in"),
        ("train.device=cuda:x", "train.device must be"),
        ("train.device=cuda:-1", "train.device must be"),
        ("train.threads=-1", "train.threads must be >= 0"),
        ("preset=../../evil", "preset name"),
        ("preset=a/b", "preset name"),
        ("schedule.kind=sometimes", "schedule.kind must be one of"),
        ("train.device=tpu", "train.device must be"),
        ("data.mi_set=half", "data.mi_set must be one of"),
        ("noequals", "key=value"),
        ("data.shuffle=maybe", "data.shuffle must be true or false"),
        ('data.dataset="q"', "unknown dataset spec 'q'"),
    ],
)
def test_bad_override_is_a_one_line_user_error(override, fragment):
    with pytest.raises(UserError) as info:
        load_preset("quick", [override])
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UserError, match="valid presets: .*saxe-relu"):
        load_preset("saxe-sigmoid")


def test_preset_file_path_is_accepted(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "x"\n[train]\nepochs = 3\n[estimators.binning]\n')
    cfg = load_preset(str(path))
    assert cfg.preset == "mine" and cfg.train.epochs == 3


def test_invalid_toml_file_is_a_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nepochs = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_preset(str(path))


def test_user_config_dir_presets_are_listed_and_win(tmp_path, monkeypatch):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "quick.toml").write_text('description = "mine"\n[estimators.binning]\n')
    monkeypatch.setenv("IBTUI_CONFIG_DIR", str(tmp_path))
    assert available_presets()["quick"] == tmp_path / "presets" / "quick.toml"
    assert load_preset("quick").description == "mine"


def test_a_preset_needs_an_estimator():
    with pytest.raises(UserError, match="estimators"):
        config_from_dict({"train": {"epochs": 1}})


def test_resolved_toml_round_trips():
    cfg = load_preset("saxe-relu", ["train.epochs=7"])
    again = config_from_dict(tomllib.loads(cfg.to_toml()))
    assert again == cfg


def test_apply_override_on_a_non_table_section_is_a_user_error():
    with pytest.raises(UserError):
        apply_override({"train": 5}, "train.epochs=3")


def test_a_single_hidden_width_is_a_one_layer_list():
    assert load_preset("quick", ["model.widths=10"]).model.widths == [10]


def test_a_non_utf8_preset_file_is_a_user_error(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not valid TOML"):
        load_preset(str(path))


def test_an_unreadable_user_preset_does_not_break_the_listing(tmp_path, monkeypatch):
    from ibtui.config import preset_description

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "broken.toml").write_bytes(b"\xff\xfe")
    monkeypatch.setenv("IBTUI_CONFIG_DIR", str(tmp_path))
    assert "unreadable" in preset_description(available_presets()["broken"])
