"""Models that work under forward-mode AD: MLP and CNN, GroupNorm/LayerNorm or none, never BatchNorm."""

from __future__ import annotations

import math
from copy import deepcopy

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


class ScaledOutput(nn.Module):
    """α·f(x; θ), or α·(f(x; θ) − f(x; θ₀)) when centred (Chizat & Bach's lazy-training model).

    The initial network f(·; θ₀) is a frozen copy whose parameters are buffers: it moves with
    the model between devices and dtypes but is never trained, and θ is the wrapped network's
    parameters alone, so every trainer (IL, GN, plain) and every measure sees the scaled model.
    """

    def __init__(self, net: nn.Module, alpha: float, center: bool):
        super().__init__()
        self.net = net
        self.alpha = alpha
        self.init = _frozen_copy(net) if center else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.init is not None:
            with torch.no_grad():
                out0 = self.init(x)
            out = out - out0
        return self.alpha * out if self.alpha != 1 else out


def _frozen_copy(net: nn.Module) -> nn.Module:
    copy = deepcopy(net)
    for module in copy.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            delattr(module, name)
            module.register_buffer(name, p.detach().clone())
    return copy


def _gain(activation: str) -> float:
    # GELU has no entry in calculate_gain; it behaves like ReLU for the variance at init
    return nn.init.calculate_gain("tanh" if activation == "tanh" else "relu")


def he_init(model: nn.Module, activation: str) -> None:
    """Kaiming normal (fan-in) weights with the activation's gain, zero biases; the readout
    (the last Linear, no activation after it) gain 1. Norm layers keep weight 1, bias 0."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    for i, layer in enumerate(layers):
        gain = 1.0 if i == len(layers) - 1 else _gain(activation)
        fan_in = nn.init._calculate_correct_fan(layer.weight, "fan_in")
        with torch.no_grad():
            layer.weight.normal_(0.0, gain / math.sqrt(fan_in))
            if layer.bias is not None:
                layer.bias.zero_()


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
        if cfg.init == "he":
            he_init(model, cfg.activation)
    model = model.to(getattr(torch, cfg.dtype))
    if cfg.output_scale != 1 or cfg.center_output:
        model = ScaledOutput(model, cfg.output_scale, cfg.center_output)
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
