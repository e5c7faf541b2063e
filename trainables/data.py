"""Datasets as tensors resident on the trial's device, batched by seeded index permutations.

No DataLoader: a step's batch is a pure function of (seed, step), which makes save/restore
exact and lets tests rebuild any batch independently (:func:`batch_indices`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.catalog import (
    DIGITS_SPLIT_SEED,
    TORCHVISION,
    DatasetMissingError,
    missing_message,
)
from trainables.config import TrialConfig


@dataclass(frozen=True)
class Data:
    """Train and test tensors; inputs standardised, shape (N, C, H, W) for images or (N, D)."""

    x_train: torch.Tensor
    y_train: torch.Tensor  # int64 class labels
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int] | None  # (C, H, W) when the inputs are images

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    def with_memory_format(self, memory_format: torch.memory_format) -> Data:
        """Images in `memory_format` (e.g. torch.channels_last): same values and shapes."""
        if self.x_train.ndim != 4:
            return self
        return dataclasses.replace(
            self,
            x_train=self.x_train.contiguous(memory_format=memory_format),
            x_test=self.x_test.contiguous(memory_format=memory_format),
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> Data:
        return Data(
            self.x_train.to(device, dtype), self.y_train.to(device),
            self.x_test.to(device, dtype), self.y_test.to(device),
            self.num_classes, self.image_shape,
        )  # fmt: skip


def load_data(cfg: TrialConfig, device: torch.device | str = "cpu") -> Data:
    """Load cfg.dataset, subsample deterministically, standardise on the train split."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.dataset == "digits":
        data = _digits()
    elif cfg.dataset == "synthetic":
        data = _synthetic(cfg.seed)
    else:
        data = _torchvision(cfg.dataset, cfg.data_dir, cfg.download)
    data = _subsample(data, cfg.n_train, cfg.n_test, cfg.seed)
    return _standardise(data).to(torch.device(device), dtype)


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
    importing scikit-learn: the import costs 1.5-2.5 s in every fresh trial process on 2 cores,
    the file 30 ms. Falls back to ``load_digits`` if the file is not where it used to be.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    path = Path(roots[0], "datasets", "data", "digits.csv.gz") if roots else None
    if path is not None and path.is_file():
        raw = np.loadtxt(path, delimiter=",")
        return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


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
    return Data(xtr, ytr, xte, yte, data.num_classes, data.image_shape)


def _standardise(data: Data) -> Data:
    """Per-feature standardisation with train-split statistics (per-channel for images)."""
    dims = (0, 2, 3) if data.x_train.ndim == 4 else (0,)
    mean = data.x_train.mean(dims, keepdim=True)
    std = data.x_train.std(dims, keepdim=True).clamp_min(1e-6)
    return Data(
        (data.x_train - mean) / std, data.y_train, (data.x_test - mean) / std, data.y_test,
        data.num_classes, data.image_shape,
    )  # fmt: skip


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
