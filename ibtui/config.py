"""Run configuration: presets (TOML) → validated dataclasses, with ``--set key=value`` overrides.

A preset file has a top-level ``description`` and the tables ``[data]``, ``[model]``,
``[train]``, ``[schedule]``, ``[store]`` and ``[estimators.NAME]`` (one table per estimator
to run, NAME from ``ibtui.estimators.ESTIMATORS``). Missing fields take the defaults below.
Every problem raises :class:`ibtui.errors.UserError` with one line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from ibtui.errors import UserError
from ibtui.estimators import ESTIMATORS, Estimator

ACTIVATIONS = ("tanh", "relu", "linear", "sigmoid", "softplus", "elu")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("every", "every_n", "log", "stepped", "stepped_mnist", "delta_exact", "delta_approx", "delta_halving")
MI_SETS = ("all", "train", "test")
INITS = ("idnns", "ibsgd", "keras", "torch")
MODEL_KINDS = ("mlp", "cnn")
MAX_POINTS = 1_000_000
"""Largest ``schedule.points`` (the log schedule holds that many epochs)."""
MAX_WIDTH = 65536


@dataclass
class DataConfig:
    """dataset: ``12bit`` | ``mat:PATH`` | ``mnist`` | ``fashion-mnist`` | ``npz:PATH``.

    train_fraction: share of samples used for training (ignored when the dataset has a
    predefined test split, as MNIST does). mi_set: samples on which MI is measured.
    mi_max_samples: cap on the MI set (0 = no cap; a seeded random subset otherwise).
    """

    dataset: str = "12bit"
    train_fraction: float = 0.8
    shuffle: bool = True
    mi_set: str = "all"
    mi_max_samples: int = 0
    data_dir: str = ""


@dataclass
class ModelConfig:
    """The network: ``kind`` "mlp" (hidden ``widths``, ``activation`` after each, softmax output)
    or "cnn" (``layers``, see below).

    layers (cnn only): the layer list in order, a softmax layer over the classes added last
    (``ibtui.engine.cnn``): ``conv:C:K[:P]`` (C channels, K×K kernel, stride 1, zero padding P,
    then ``activation``), ``pool:K`` (K×K max pooling, stride K), ``dense:W`` (W units, then
    ``activation``); no conv or pool after a dense. Every layer's output is a measured layer,
    flattened per sample. input_shape (cnn only): [C, H, W] of the inputs; empty = the dataset's
    own (MNIST-style IDX 1×28×28, CIFAR-10 3×32×32; needed for ``npz``/``mat`` data). A CNN has no
    noise or quantization options; ensembles (train.seeds > 1) run as grouped convolutions.

    init (biases are zero in all but ``torch``; truncated normals are cut at ±2 std and redrawn):
    - ``idnns``: every layer truncated normal with std 1/sqrt(fan_in) (IDNNs' model.py);
    - ``ibsgd``: hidden layers truncated normal with std 1/sqrt(the layer's own width, i.e. fan_out),
      the softmax layer Keras' glorot_uniform (ibsgd's IBnet_SaveActivations.ipynb);
    - ``keras``: Keras' default glorot_uniform, U(±sqrt(6/(fan_in+fan_out))), in every layer
      (ibsgd's MNIST_SaveActivations.ipynb);
    - ``torch``: PyTorch's nn.Linear default.
    quantize_bits: 0 = float activations; k ≥ 1 = every hidden activation rounded to one of 2^k
    equally spaced levels spanning ``quantize_range`` [low, high] (values outside are clipped),
    in training (straight-through gradient) and evaluation, so each layer is a discrete variable
    and its MI exact. An empty range means the activation's own: [−1, 1] for tanh, [0, 1] for
    sigmoid (the others are unbounded and need an explicit range).
    noise_std: σ > 0 makes a noisy network (Goldfeld et al. 2019): N(0, σ²) noise is added after
    every hidden activation in training and evaluation. Its planes come from ``noisy_mc`` (the known
    Gaussian mixture) or from plug-in estimators (the binning family, discrete) on ``noise_draws``
    noisy passes per input pooled, which estimate H(T|X) from the repeats (at most log2 noise_draws
    bits: flagged as saturated there). Estimators that assume a deterministic layer are refused.
    """

    kind: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [10, 7, 5, 4, 3])
    layers: list[str] = field(default_factory=list)
    input_shape: list[int] = field(default_factory=list)
    activation: str = "tanh"
    init: str = "idnns"
    quantize_bits: int = 0
    quantize_range: list[float] = field(default_factory=list)
    noise_std: float = 0.0
    noise_draws: int = 8

    def levels_range(self) -> tuple[float, float] | None:
        """[low, high] of the quantization levels, or None for float activations."""
        if not self.quantize_bits:
            return None
        if self.quantize_range:
            return float(self.quantize_range[0]), float(self.quantize_range[1])
        return BOUNDED_RANGES.get(self.activation)


@dataclass
class TrainConfig:
    """Optimiser settings. epochs: training epochs; epoch 0 is the untrained network.

    threads: CPU threads for torch (0 = automatic: one for training, which is faster for these
    small networks and never oversubscribes a shared machine, all cores for ensembles of 8 or
    more networks; all cores for MI estimation).
    seeds: networks trained together as one ensemble, with seeds seed, seed + 1, ...,
    seed + seeds − 1 (each its own initial weights, data split and batch order).
    gradient_stats: record, every epoch and per layer, the norms of the mean and standard
    deviation of the minibatch gradients of its weights (``ibtui.engine.phases``).
    shuffle_batches: draw a new order of the training samples every epoch (Keras' ``fit``, so
    ibsgd); false feeds the same consecutive minibatches in the same order every epoch (IDNNs).
    adam_eps: Adam's epsilon. adam_eps_hat: false adds it to the bias-corrected sqrt(v̂)
    (PyTorch, Algorithm 1 of Kingma & Ba); true adds it to the uncorrected sqrt(v) ("epsilon hat",
    as TensorFlow's AdamOptimizer and Keras' Adam do: IDNNs with 1e-8, ibsgd with Keras' 1e-7).
    """

    optimizer: str = "adam"
    lr: float = 4e-4
    momentum: float = 0.0
    batch_size: int = 256
    epochs: int = 10000
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    seeds: int = 1
    gradient_stats: bool = False
    shuffle_batches: bool = True
    adam_eps: float = 1e-8
    adam_eps_hat: bool = False


BOUNDED_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
"""Activations with a bounded range: the default quantization range."""

MAX_SEEDS = 1000
"""Largest ensemble: the members' activations are held together in memory."""


@dataclass
class ScheduleConfig:
    """Which epochs get measured (see ``ibtui.engine.schedule``).

    every_n uses ``every``; log uses ``points`` (IDNNs: 400 log2-spaced points, deduplicated);
    stepped and stepped_mnist are ibsgd's; delta_approx (the study's rule), delta_halving and
    delta_exact use ``delta`` (bits, largest allowed move of any layer on the
    plane of ``estimator``, "" = the first plane), ``initial_skip`` and ``max_skip``.
    """

    kind: str = "stepped"
    every: int = 10
    points: int = 400
    delta: float = 0.1
    initial_skip: int = 1
    max_skip: int = 256
    estimator: str = ""


@dataclass
class StoreConfig:
    """Run directory options: ``checkpoints`` keeps the weights at every measured epoch."""

    runs_dir: str = "runs"
    checkpoints: bool = True


@dataclass
class AsIfRandomConfig:
    """The "as if random" experiment: the network's weights treated as random variables through the
    randomness of SGD itself, so that H(T|X) > 0 is a defined, estimable quantity.

    pool: "" (off) or "sgd". At every measured epoch e, each network is branched into ``children``
    copies that share its weights and optimiser state (so their units are aligned); each copy trains
    ``window`` more epochs with its own batch order. The copies' activations of each input form its
    distribution of T, and the plug-in estimators (binning family, discrete) give planes
    ``<plane>~sgd`` with I(X;T) = H(T) − H(T|X), H(T|X) ≤ log2 children (the cap; flagged when
    reached). README: "As if random" states the definition, the estimator and its bias.
    """

    pool: str = ""
    children: int = 8
    window: int = 10


@dataclass
class Config:
    preset: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    as_if_random: AsIfRandomConfig = field(default_factory=AsIfRandomConfig)
    estimators: dict[str, Estimator] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fully resolved configuration (the shape of the TOML)."""
        out: dict[str, Any] = {"preset": self.preset, "description": self.description}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        out["estimators"] = {k: dataclasses.asdict(v) for k, v in self.estimators.items()}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "schedule": ScheduleConfig,
    "store": StoreConfig,
    "as_if_random": AsIfRandomConfig,
}


# ----------------------------------------------------------------------------- presets


def preset_dirs() -> list[Path]:
    """Where presets live, in lookup order: the user's config dir, then the bundled ones."""
    dirs = []
    user = os.environ.get("IBTUI_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "ibtui"
    )
    dirs.append(Path(user) / "presets")
    here = Path(__file__).resolve().parent
    dirs.append(here / "_presets")  # installed wheel
    dirs.append(here.parent / "presets")  # source checkout / editable install
    return [d for d in dirs if d.is_dir()]


def available_presets() -> dict[str, Path]:
    """Preset name → file, the first directory in ``preset_dirs()`` winning."""
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for path in sorted(d.glob("*.toml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def read_toml(path: Path) -> dict[str, Any]:
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block us
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UserError(f"{path} is not a regular file")
            if info.st_size > 4 << 20:
                raise UserError(f"{path} is larger than 4 MB; not a preset")
            with os.fdopen(os.dup(fd), "rb") as fh:
                return tomllib.load(fh)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path} nests too deeply to be a preset") from None


def preset_description(path: Path) -> str:
    try:
        return str(read_toml(path).get("description", ""))
    except UserError as exc:
        return f"(unreadable: {exc})"


def load_preset(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve a preset name (or a path to a .toml file), apply overrides, validate."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UserError(f"preset file not found: {name_or_path}")
        name = path.stem
    else:
        presets = available_presets()
        if name_or_path not in presets:
            valid = ", ".join(presets) or "(none found)"
            raise UserError(f"unknown preset '{name_or_path}'; valid presets: {valid}")
        path, name = presets[name_or_path], name_or_path
    raw = read_toml(path)
    raw.setdefault("preset", name)
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw, source=str(path))


# ----------------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """A TOML literal (``500``, ``1e-3``, ``true``, ``[10, 7]``, ``"x"``) or else a bare string."""
    if len(text) > 100_000:
        raise UserError(f"value of {len(text)} characters is too long for an override")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise UserError(f"value {text[:40]!r}... nests too deeply") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` (or ``estimators.NAME.key=value``) to a raw preset dict."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override '{item}' is not of the form key=value (e.g. train.epochs=500)")
    parts = key.split(".")
    top_level = {"description", "preset"}
    if len(parts) == 1 and parts[0] in top_level:
        raw[parts[0]] = value
        return
    if parts[0] == "estimators":
        if len(parts) == 2:  # estimators.kde=false disables, =true enables with defaults
            flag = parse_value(value)
            if not isinstance(flag, bool):
                raise UserError(f"override '{item}': use {key}=true|false or {key}.PARAM=VALUE")
            if parts[1] not in ESTIMATORS:
                raise UserError(f"unknown estimator '{parts[1]}'; valid: {', '.join(ESTIMATORS)}")
            ests = raw.setdefault("estimators", {})
            if flag:
                ests.setdefault(parts[1], {})
            else:
                ests.pop(parts[1], None)
            return
        if len(parts) != 3:
            raise UserError(f"override key '{key}' should be estimators.NAME.PARAM")
        raw.setdefault("estimators", {}).setdefault(parts[1], {})[parts[2]] = parse_value(value)
        return
    if len(parts) != 2 or parts[0] not in SECTIONS:
        valid = ", ".join([*SECTIONS, "estimators"])
        raise UserError(f"unknown override key '{key}'; keys are SECTION.FIELD with SECTION one of {valid}")
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise UserError(f"[{parts[0]}] in the preset is not a table")
    section[parts[1]] = parse_value(value)


# ----------------------------------------------------------------------------- building & validation


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert a TOML value against a dataclass field type; one-line error otherwise."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item_hint,) = typing.get_args(hint)
        if isinstance(value, str):  # "10,7,5" from the command line
            value = [parse_value(v.strip()) for v in value.strip("[]").split(",") if v.strip()]
        elif not isinstance(value, (list, bool)) and isinstance(value, (int, float)):
            value = [value]  # a single hidden layer: widths = 10
        if isinstance(value, list):
            return [_coerce(v, item_hint, where) for v in value]
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except UserError:
                continue
    else:  # pragma: no cover - programming error
        raise TypeError(f"unsupported field type {hint!r}")
    name = "a list" if origin is list else _article(getattr(hint, "__name__", str(hint)))
    raise UserError(f"{where} must be {name}, got {value!r}")


def _article(type_name: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(type_name, type_name)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"[{where}] must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise UserError(f"unknown key '{where}.{unknown[0]}'; valid keys in [{where}]: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    return cls(**kwargs)


def build_estimator(kind: str, params: dict[str, Any]) -> Any:
    """A validated estimator ``kind`` with ``params`` (TOML-typed values); UserError otherwise."""
    if kind not in ESTIMATORS:
        raise UserError(f"unknown estimator '{kind}'; valid: {', '.join(ESTIMATORS)}")
    est = _build(ESTIMATORS[kind], params, f"estimators.{kind}")
    est.validate()
    return est


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Build and validate a Config from a raw (TOML-shaped) dict."""
    raw = dict(raw)
    top = {"preset", "description", "estimators", *SECTIONS}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise UserError(f"{source}: unknown key '{unknown[0]}'; valid top-level keys: {', '.join(sorted(top))}")
    cfg = Config(
        preset=_coerce(raw.get("preset", "custom"), str, "preset"),
        description=_coerce(raw.get("description", ""), str, "description"),
    )
    for name, cls in SECTIONS.items():
        setattr(cfg, name, _build(cls, raw.get(name, {}), name))
    ests = raw.get("estimators", {})
    if not isinstance(ests, dict):
        raise UserError("[estimators] must be a table of [estimators.NAME] tables")
    for name, params in ests.items():
        if name not in ESTIMATORS:
            raise UserError(f"unknown estimator '{name}'; valid: {', '.join(ESTIMATORS)}")
        est = _build(ESTIMATORS[name], params, f"estimators.{name}")
        est.validate()
        cfg.estimators[name] = est
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _choice(value: str, options: tuple[str, ...], where: str) -> None:
    _check(value in options, f"{where} must be one of {', '.join(options)}; got '{value}'")


POOLS = ("", "sgd")


def validate(cfg: Config) -> None:
    """Reject impossible values with one line each."""
    d, m, t, s = cfg.data, cfg.model, cfg.train, cfg.schedule
    _check(bool(d.dataset.strip()), "data.dataset must not be empty")
    from ibtui.engine.data import check_dataset_spec  # the engine's data module imports no config
    check_dataset_spec(d.dataset)
    _check(0.0 < d.train_fraction <= 1.0, f"data.train_fraction must be in (0, 1]; got {d.train_fraction}")
    _choice(d.mi_set, MI_SETS, "data.mi_set")
    _check(d.mi_max_samples >= 0, f"data.mi_max_samples must be >= 0; got {d.mi_max_samples}")
    _check(all(1 <= w <= MAX_WIDTH for w in m.widths),
           f"model.widths must be integers from 1 to {MAX_WIDTH}; got {m.widths}")
    _check(len(m.widths) >= 1, "model.widths needs at least one hidden layer")
    _choice(m.activation, ACTIVATIONS, "model.activation")
    _choice(m.kind, MODEL_KINDS, "model.kind")
    if m.kind == "cnn":
        validate_cnn(cfg)
    else:
        _check(not m.layers and not m.input_shape, 'model.layers and model.input_shape are for model.kind = "cnn" '
               "(an MLP takes model.widths)")
    _choice(m.init, INITS, "model.init")
    _check(0 <= m.quantize_bits <= 16, f"model.quantize_bits must be from 0 (off) to 16; got {m.quantize_bits}")
    if m.quantize_range:
        _check(len(m.quantize_range) == 2 and all(math.isfinite(v) for v in m.quantize_range)
               and m.quantize_range[0] < m.quantize_range[1],
               f"model.quantize_range must be [low, high] with low < high; got {m.quantize_range}")
    elif m.quantize_bits:
        _check(m.activation in BOUNDED_RANGES,
               f"model.quantize_range is needed to quantize {m.activation} activations (unbounded); "
               f"e.g. --set model.quantize_range=[0,4]")
    _check(math.isfinite(m.noise_std) and 0 <= m.noise_std <= 100,
           f"model.noise_std must be a number from 0 to 100; got {m.noise_std}")
    for kind, est in cfg.estimators.items():
        if est.needs_centres:
            _check(m.noise_std > 0, f"estimators.{kind} measures noisy networks: set model.noise_std > 0")
            _check(math.isclose(est.noise_std, m.noise_std, rel_tol=1e-12),
                   f"estimators.{kind}.noise_std ({est.noise_std}) must equal model.noise_std ({m.noise_std})")
    _choice(t.optimizer, OPTIMIZERS, "train.optimizer")
    _check(math.isfinite(t.lr) and t.lr > 0, f"train.lr must be a positive number; got {t.lr}")
    _check(math.isfinite(t.momentum) and 0 <= t.momentum < 1, f"train.momentum must be in [0, 1); got {t.momentum}")
    _check(math.isfinite(t.adam_eps) and 0 < t.adam_eps <= 1, f"train.adam_eps must be in (0, 1]; got {t.adam_eps}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1; got {t.batch_size}")
    _check(t.epochs >= 0, f"train.epochs must be >= 0; got {t.epochs}")
    _check(1 <= t.seeds <= MAX_SEEDS, f"train.seeds must be in [1, {MAX_SEEDS}]; got {t.seeds}")
    _check(0 <= t.seed and t.seed + t.seeds <= 2**63, f"train.seed must be in [0, 2**63 - train.seeds]; got {t.seed}")
    _check(t.threads >= 0, f"train.threads must be >= 0 (0 = automatic); got {t.threads}")
    _check(t.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", t.device) is not None,
           f"train.device must be auto, cpu, cuda or cuda:N; got '{t.device}'")
    validate_schedule(s, [p for est in cfg.estimators.values() for p in est.planes])
    _check(bool(cfg.store.runs_dir.strip()), "store.runs_dir must not be empty")
    a = cfg.as_if_random
    if a.pool in ("seeds", "epochs"):
        raise UserError(f"as_if_random.pool = \"{a.pool}\" was withdrawn: pooling independently trained networks "
                        "(units not aligned) or consecutive measured epochs (depends on the schedule) defines no "
                        "H(T|X); use pool = \"sgd\" (children branched from the network, README: As if random)")
    _choice(a.pool, POOLS, "as_if_random.pool")
    _check(2 <= a.children <= 256, f"as_if_random.children must be from 2 to 256; got {a.children}")
    _check(1 <= a.window <= 100000, f"as_if_random.window must be from 1 to 100000 epochs; got {a.window}")
    if a.pool:
        poolable = [kind for kind, est in cfg.estimators.items() if est.pools]
        _check(bool(poolable), "as_if_random needs an estimator that estimates H(T|X) from repeated inputs: "
               f"{', '.join(k for k, c in ESTIMATORS.items() if c.pools)}")
        _check(t.shuffle_batches, "as_if_random.pool = \"sgd\" draws each child's batch order: it needs "
               "train.shuffle_batches = true")
        _check(m.noise_std == 0, "as_if_random on a noisy network is not supported (its noise already makes T "
               "random: use noisy_mc or a binning estimator on noisy passes)")
        _check(s.kind != "delta_exact", "as_if_random.pool = \"sgd\" branches from the running optimiser; "
               "delta_exact measures kept weights without it: use another schedule")
    _check(1 <= m.noise_draws <= 4096, f"model.noise_draws must be from 1 to 4096; got {m.noise_draws}")
    if m.noise_std > 0:
        deterministic = [kind for kind, est in cfg.estimators.items() if not (est.pools or est.needs_centres)]
        _check(not deterministic, f"estimators.{deterministic[0] if deterministic else ''} assumes a deterministic layer; "
               "on a noisy network (model.noise_std > 0) use noisy_mc or a plug-in estimator on pooled noisy passes "
               "(binning, binning_fixed, binning_adaptive, discrete)")
    _check(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", cfg.preset) is not None,
           f"preset name '{cfg.preset}' must be 1-64 letters, digits, '.', '_', '+' or '-' (it names run directories)")
    _check(len(cfg.estimators) >= 1, "at least one [estimators.NAME] table is needed; valid: " + ", ".join(ESTIMATORS))


def validate_cnn(cfg: Config) -> None:
    """A CNN's layer list (and input shape, when given) fit together; options only MLPs have are refused."""
    from ibtui.engine.cnn_layers import check_input_shape, layer_shapes, parse_layers  # no torch there

    m = cfg.model
    layers = parse_layers(m.layers)
    if m.input_shape:
        layer_shapes(layers, check_input_shape(m.input_shape))
    for name, value, off in (("model.noise_std", m.noise_std, 0.0), ("model.quantize_bits", m.quantize_bits, 0),
                             ("train.gradient_stats", cfg.train.gradient_stats, False),
                             ("as_if_random.pool", cfg.as_if_random.pool, "")):
        _check(value == off, f'{name} is not supported with model.kind = "cnn"; got {value!r}')


def validate_schedule(s: ScheduleConfig, planes: list[str]) -> None:
    """Reject an impossible schedule (one line each); ``planes``: those the run measures."""
    _choice(s.kind, SCHEDULES, "schedule.kind")
    _check(s.every >= 1, f"schedule.every must be >= 1; got {s.every}")
    _check(2 <= s.points <= MAX_POINTS, f"schedule.points must be from 2 to {MAX_POINTS}; got {s.points}")
    _check(math.isfinite(s.delta) and s.delta > 0, f"schedule.delta must be > 0 bits; got {s.delta}")
    _check(s.initial_skip >= 1, f"schedule.initial_skip must be >= 1; got {s.initial_skip}")
    _check(s.max_skip >= s.initial_skip, f"schedule.max_skip must be >= schedule.initial_skip; got {s.max_skip}")
    if s.estimator:
        _check(s.estimator in planes, f"schedule.estimator '{s.estimator}' is not a plane of this run; planes: {', '.join(planes)}")


def pool_suffix(cfg: Config) -> str:
    """Suffix of the as-if-random planes ("~sgd"), "" when pooling is off."""
    return "~sgd" if cfg.as_if_random.pool else ""


def all_planes(cfg: Config) -> list[str]:
    """Every plane a run of ``cfg`` records: each estimator's, then the as-if-random ones."""
    planes = [p for est in cfg.estimators.values() for p in est.planes]
    suffix = pool_suffix(cfg)
    if suffix:
        planes += [p + suffix for est in cfg.estimators.values() if est.pools for p in est.planes]
    return planes
