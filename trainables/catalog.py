"""The datasets ilstudy knows and where their files live: no torch, so a driver can check
a study's data before anything is created without importing the numerical stack."""

from __future__ import annotations

from pathlib import Path

from trainables.config import TrialConfig

# torchvision's class, the files it looks for under data_dir, and the image shape (C, H, W)
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", (1, 28, 28)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", (1, 28, 28)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (3, 32, 32)),
}
DIGITS_SPLIT_SEED = 20240101  # the digits train/test split is fixed, independent of the trial seed


class DatasetMissingError(FileNotFoundError):
    """A torchvision dataset is not under data_dir and download is off."""


def check_available(cfg: TrialConfig) -> None:
    """DatasetMissingError if cfg's torchvision files are absent and download is off.

    Cheap (no loading): a study checks this before it creates anything, so a missing dataset
    is bad input, not a study of errored trials.
    """
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
