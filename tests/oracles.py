"""Independent constructions the trainers are checked against: materialised Jacobians in float64,
dense GGN matrices, hand-written torch.optim loops. Nothing here calls the code under test's
Jacobian or solver helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def tiny_config(**overrides) -> dict:
    """A float64 trial on the synthetic task that runs in well under a second."""
    cfg = dict(
        dataset="synthetic", n_train=96, n_test=64, width=12, depth=2, activation="tanh",
        total_steps=30, batch_size=16, eval_every=10, probe_size=8, dtype="float64",
    )  # fmt: skip
    cfg.update(overrides)
    return cfg


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def outputs_at(model: nn.Module, theta_P: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f(x; θ) for a flat parameter vector θ."""
    params, start = {}, 0
    for name, p in model.named_parameters():
        params[name] = theta_P[start : start + p.numel()].view_as(p)
        start += p.numel()
    return functional_call(model, params, (x,))


def dense_jacobian(model: nn.Module, theta_P: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """J as an (n·c) × P matrix via torch.autograd.functional.jacobian (one reverse pass per row)."""
    jac = torch.autograd.functional.jacobian(lambda t: outputs_at(model, t, x).reshape(-1), theta_P)
    return jac


def dense_output_hessian(kind: str, out_BxC: torch.Tensor) -> torch.Tensor:
    """∂²L/∂f² by autograd on the loss itself (no closed form), (n·c) × (n·c)."""
    y = out_BxC.argmax(1)  # any labels: the CE Hessian does not depend on them, MSE's neither

    def loss(flat: torch.Tensor) -> torch.Tensor:
        out = flat.view_as(out_BxC)
        if kind == "cross_entropy":
            return F.cross_entropy(out, y)
        return 0.5 * (out - F.one_hot(y, out.shape[1]).to(out)).pow(2).sum(1).mean()

    return torch.autograd.functional.hessian(loss, out_BxC.reshape(-1))


def dense_loss_grad(model, theta_P, x, y, kind) -> torch.Tensor:
    theta = theta_P.clone().requires_grad_()
    out = outputs_at(model, theta, x)
    if kind == "cross_entropy":
        value = F.cross_entropy(out, y)
    else:
        value = 0.5 * (out - F.one_hot(y, out.shape[1]).to(out)).pow(2).sum(1).mean()
    (g,) = torch.autograd.grad(value, theta)
    return g


def interrupted_run(cfg: dict, at_step: int, tmp_path) -> tuple:
    """Run a trial to its record at `at_step`, save its state to disk, restore it into a fresh
    Trial and run that to the end: (interrupted trial, restored trial, all records in order)."""
    from trainables import Trial

    trial = Trial(cfg)
    head = []
    for record in trial.records():
        head.append(record)
        if record["step"] == at_step:
            torch.save(trial.state_dict(), tmp_path / "state.pt")
            break
    restored = Trial(cfg)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    return trial, restored, head + list(restored.records())
