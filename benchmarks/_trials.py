"""Building and driving trials for benchmarks, including on synthetic data of a given shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from trainables import Trial
from trainables.data import Data


def synthetic_images(
    shape: tuple[int, int, int], n_train: int, n_test: int, classes: int, seed: int = 0
) -> Data:
    """Standard-normal images of the given (C, H, W) with random labels: CIFAR-10's shape
    without its files (a GPU machine has no network)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *shape, generator=g)
    y = torch.randint(0, classes, (n_train + n_test,), generator=g)
    return Data(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes, shape)


def make_trial(config: Mapping[str, Any], device: torch.device, data: Data | None = None) -> Trial:
    """A trial on `device`, on its configured dataset or on the given tensors."""
    return Trial(dict(config), device, data=data)


def to_layout(trial: Trial, memory_format: torch.memory_format) -> Trial:
    """Convert a CNN trial's model, parameters, copies and inputs to `memory_format`
    (Trial itself runs a CNN channels-last on the CPU, contiguous elsewhere)."""
    trial.model.to(memory_format=memory_format)  # keeps the Parameter objects in θ

    def fmt(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=memory_format) if t.ndim == 4 else t

    trial.theta_s = {k: fmt(v) for k, v in trial.theta_s.items()}
    trial.theta_0 = {k: fmt(v) for k, v in trial.theta_0.items()}
    trial.data = trial.data.with_memory_format(memory_format)
    return trial
