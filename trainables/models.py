"""Models that work under forward-mode AD: MLP and CNN, GroupNorm/LayerNorm or none, never BatchNorm."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.config import TrialConfig

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _norm(kind: str, channels: int, conv: bool) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.GroupNorm(1, channels) if conv else nn.LayerNorm(channels)  # "layer"


class MLP(nn.Module):
    """Flatten, then `depth` hidden layers of `width` units; depth=0 is linear in its parameters."""

    def __init__(
        self, input_dim: int, num_classes: int, width: int, depth: int, act: str, norm: str
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = input_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), _norm(norm, width, False), _ACTIVATIONS[act]()]
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x_BxD: torch.Tensor) -> torch.Tensor:
        return self.net(x_BxD)


class CNN(nn.Module):
    """Four 3×3 conv blocks (channels·1, 2, 4, 4), two 2×2 average pools, global average pool.

    With channels=32 this is ~250k parameters, the paper's scale; it adapts to 32×32, 28×28 and 8×8.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int, act: str, norm: str):
        super().__init__()
        chans = [in_channels, channels, 2 * channels, 4 * channels, 4 * channels]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1),
                _norm(norm, chans[i + 1], True),
                _ACTIVATIONS[act](),
            ]
            if i in (1, 2):
                layers.append(nn.AvgPool2d(2, ceil_mode=True))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x_BxCxHxW: torch.Tensor) -> torch.Tensor:
        return self.net(x_BxCxHxW)


def build_model(
    cfg: TrialConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> nn.Module:
    """Build cfg.model for inputs of input_shape (without the batch dim), seeded by cfg.seed."""
    if cfg.model == "cnn" and len(input_shape) != 3:
        raise ValueError(f"model=cnn: needs image inputs (C, H, W), got shape {input_shape}")
    # initialisation depends on the seed alone: built on the CPU from a private RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(30_000 + cfg.seed)
        if cfg.model == "cnn":
            model: nn.Module = CNN(
                input_shape[0], num_classes, cfg.channels, cfg.activation, cfg.norm
            )
        else:
            dim = math.prod(input_shape)
            model = MLP(dim, num_classes, cfg.width, cfg.depth, cfg.activation, cfg.norm)
    return model.to(getattr(torch, cfg.dtype))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
