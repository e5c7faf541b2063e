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


def to_channels_last(trial: Trial) -> Trial:
    """Convert a CNN trial's model, parameters, copies and inputs to the channels-last layout."""
    trial.model.to(memory_format=torch.channels_last)  # keeps the Parameter objects in θ

    def cl(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t

    trial.theta_s = {k: cl(v) for k, v in trial.theta_s.items()}
    trial.theta_0 = {k: cl(v) for k, v in trial.theta_0.items()}
    d = trial.data
    trial.data = Data(
        cl(d.x_train), d.y_train, cl(d.x_test), d.y_test, d.num_classes, d.image_shape
    )
    return trial
