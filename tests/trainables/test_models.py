"""Models: shapes, scale, seeded initialisation, and forward-mode AD against finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from trainables import TrialConfig
from trainables.models import build_model, num_parameters


@pytest.mark.parametrize(
    ("shape", "classes"), [((3, 32, 32), 10), ((1, 28, 28), 10), ((1, 8, 8), 10)]
)
def test_cnn_adapts_to_input_sizes(shape, classes):
    model = build_model(TrialConfig.from_mapping({"model": "cnn", "channels": 32}), shape, classes)
    assert model(torch.randn(2, *shape)).shape == (2, classes)


def test_cnn_is_at_the_papers_scale():
    model = build_model(TrialConfig.from_mapping({"model": "cnn"}), (3, 32, 32), 10)
    assert 100_000 < num_parameters(model) < 1_000_000


@pytest.mark.parametrize("init", ["torch", "he"])
def test_initialisation_is_deterministic_from_seed_and_leaves_global_rng_alone(init):
    cfg = TrialConfig.from_mapping({"seed": 3, "init": init})
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(cfg, (64,), 10)
    after = torch.rand(1)
    b = build_model(cfg, (64,), 10)
    c = build_model(TrialConfig.from_mapping({"seed": 4, "init": init}), (64,), 10)
    assert torch.equal(before, after)
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        if init == "he" and name.endswith("bias"):  # He init: zero biases, for every seed
            assert torch.equal(pa, pb) and not pa.any() and not pc.any()
        else:
            assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_mlp_depth_zero_is_linear_in_its_parameters():
    model = build_model(TrialConfig.from_mapping({"depth": 0}), (64,), 10)
    assert num_parameters(model) == 64 * 10 + 10


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "mlp", "norm": "layer", "activation": "gelu"},
        {"model": "mlp", "norm": "group", "activation": "tanh"},
        {"model": "cnn", "norm": "group", "channels": 4},
        {"model": "cnn", "norm": "layer", "channels": 4, "activation": "gelu"},
        {"model": "cnn", "norm": "none", "channels": 4, "activation": "tanh"},
    ],
)
def test_forward_mode_tangent_matches_central_difference(overrides):
    cfg = TrialConfig.from_mapping({**overrides, "dtype": "float64"})
    model = build_model(cfg, (1, 8, 8), 10)
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=g)
    v = {k: torch.randn(p.shape, dtype=torch.float64, generator=g) for k, p in params.items()}
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(p, v[k]) for k, p in params.items()}
        tangent = fwAD.unpack_dual(functional_call(model, duals, (x,))).tangent
    eps = 1e-6
    plus = functional_call(model, {k: p + eps * v[k] for k, p in params.items()}, (x,))
    minus = functional_call(model, {k: p - eps * v[k] for k, p in params.items()}, (x,))
    torch.testing.assert_close(tangent, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7)


def test_cnn_on_non_image_data_is_a_config_error():
    with pytest.raises(ValueError, match="image dataset"):
        TrialConfig.from_mapping({"model": "cnn", "dataset": "synthetic"})
