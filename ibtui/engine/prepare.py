"""Preparation of a run, before anything is written: the device, the data and each member's
split, the MI sets and the network (``prepare``). Raises UserError for bad input."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ibtui.config import Config, ModelConfig
from ibtui.engine.data import Dataset, load_dataset
from ibtui.engine.cnn import ConvEnsemble
from ibtui.engine.cnn_layers import check_input_shape, layer_shapes, parse_layers
from ibtui.engine.model import Ensemble, StackedNetwork
from ibtui.errors import UserError
from ibtui.estimators import MISet
from ibtui.estimators.base import check_estimators


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available else cpu; asking for cuda without one is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' was asked for but CUDA is not available on this machine; use --device cpu")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


@dataclass
class Prepared:
    """Everything validated and built before a run directory exists.

    The data stay once on the device (``x_all``, ``y_all``); each ensemble member s has its own
    split, as index rows ``train_idx[s]``, ``test_idx[s]`` and ``mi_idx[s]`` into them (the
    same rows for every member when the split does not depend on the seed).
    """

    cfg: Config
    device: torch.device
    dataset: Dataset
    x_all: torch.Tensor
    y_all: torch.Tensor
    train_idx: torch.Tensor  # (S, N_train) int64
    test_idx: torch.Tensor  # (S, N_test)
    mi_idx: torch.Tensor  # (S, N_mi)
    mi_sets: list[MISet]  # one per member
    model: StackedNetwork  # an MLP Ensemble or a ConvEnsemble

    @property
    def mi_set(self) -> MISet:
        """The first member's MI set (every member's has the same size, H(X) and H(Y) for the presets)."""
        return self.mi_sets[0]


def split_indices(dataset: Dataset, train_fraction: float, shuffle: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices: the dataset's own test split if it has one, else a (shuffled) fraction."""
    n = len(dataset.y)
    if dataset.is_test is not None:
        return np.flatnonzero(~dataset.is_test), np.flatnonzero(dataset.is_test)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    n_train = max(1, min(n, int(round(train_fraction * n))))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def member_indices(cfg: Config, dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, MI-set) row indices of the member with ``seed``. Raises UserError."""
    train_idx, test_idx = split_indices(dataset, cfg.data.train_fraction, cfg.data.shuffle, seed)
    mi_idx = {"all": np.arange(len(dataset.y)), "train": train_idx, "test": test_idx}[cfg.data.mi_set]
    if len(mi_idx) == 0:
        raise UserError(f"data.mi_set = '{cfg.data.mi_set}' selects no samples (train_fraction = {cfg.data.train_fraction})")
    if cfg.data.mi_max_samples and len(mi_idx) > cfg.data.mi_max_samples:
        rng = np.random.default_rng(seed + 1)
        mi_idx = np.sort(rng.choice(mi_idx, cfg.data.mi_max_samples, replace=False))
    return train_idx, test_idx, mi_idx


def member_seeds(cfg: Config) -> list[int]:
    """The ensemble's seeds: train.seed, train.seed + 1, ..., one per member."""
    return [cfg.train.seed + i for i in range(cfg.train.seeds)]


def build_model(m: ModelConfig, dataset: Dataset, seeds: list[int]) -> StackedNetwork:
    """The network of ``m`` for ``dataset`` (an MLP ``Ensemble`` or a ``ConvEnsemble``); UserError
    when a CNN's input shape is unknown or does not fit the data."""
    if m.kind != "cnn":
        return Ensemble(dataset.x.shape[1], m.widths, dataset.n_classes, m.activation, m.init, seeds,
                        m.quantize_bits, m.levels_range(), m.noise_std)
    if m.input_shape:
        shape = check_input_shape(m.input_shape)
    elif dataset.shape is not None:
        shape = dataset.shape
    else:
        raise UserError(f"dataset {dataset.name} has no image shape; set model.input_shape = [CHANNELS, HEIGHT, WIDTH] "
                        f"for its {dataset.x.shape[1]} features")
    if math.prod(shape) != dataset.x.shape[1]:
        raise UserError(f"model.input_shape {list(shape)} holds {math.prod(shape)} values; dataset {dataset.name} has "
                        f"{dataset.x.shape[1]} features per sample")
    layers = parse_layers(m.layers)
    layer_shapes(layers, shape)  # UserError when a layer leaves nothing of its input
    return ConvEnsemble(shape, layers, dataset.n_classes, m.activation, m.init, seeds)


def prepare(cfg: Config, from_run: bool = False) -> Prepared:
    """Resolve the device, load and split the data, build the model. Raises UserError.
    ``from_run``: ``cfg`` was read from a run directory (resume, analyze): its paths are only read,
    never created or written (a crafted ``data_dir`` cannot make us write elsewhere)."""
    device = resolve_device(cfg.train.device)
    dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir or None, fetch_into_data_dir=not from_run)
    seeds = member_seeds(cfg)
    splits = [member_indices(cfg, dataset, seed) for seed in seeds]

    def rows(part: int) -> torch.Tensor:
        return torch.as_tensor(np.stack([split[part] for split in splits]), dtype=torch.int64, device=device)

    mi_sets, previous = [], None
    for split in splits:
        same = previous is not None and np.array_equal(previous[0], split[2])
        mi_sets.append(previous[1] if same else
                       MISet.from_arrays(dataset.x[split[2]], dataset.y[split[2]], device=device))
        previous = (split[2], mi_sets[-1])
    check_estimators(list(cfg.estimators.values()), mi_sets)  # a k larger than the set, say: UserError now
    model = build_model(cfg.model, dataset, seeds)
    return Prepared(
        cfg=cfg, device=device, dataset=dataset,
        x_all=torch.as_tensor(dataset.x, dtype=torch.float32, device=device),
        y_all=torch.as_tensor(dataset.y, dtype=torch.int64, device=device),
        train_idx=rows(0), test_idx=rows(1), mi_idx=rows(2), mi_sets=mi_sets, model=model.to(device),
    )
