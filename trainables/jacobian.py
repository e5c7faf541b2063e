"""Per-example Jacobians of the network outputs, and flat ↔ dict parameter vectors."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

Params = dict[str, torch.Tensor]


def flatten(tensors: Params | list[torch.Tensor]) -> torch.Tensor:
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.reshape(-1) for t in values])


def unflatten(vec_P: torch.Tensor, like: Params) -> Params:
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vec_P[start : start + t.numel()].view_as(t)
        start += t.numel()
    return out


def _single(model: nn.Module):
    def f(params: Params, x_single: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x_single.unsqueeze(0),)).squeeze(0)

    return f


def jacobian(model: nn.Module, params: Params, x: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """J as (n, c, P): row (i, a) is ∂f_a(x_i)/∂θ, parameters in `params` order."""
    params = {k: v.detach() for k, v in params.items()}
    jac = vmap(jacrev(_single(model)), in_dims=(None, 0), chunk_size=chunk)(params, x)
    n = x.shape[0]
    c = next(iter(jac.values())).shape[1]
    return torch.cat([jac[name].reshape(n, c, -1) for name in params], dim=2)


def projected_jacobian(
    model: nn.Module, params: Params, x: torch.Tensor, v_C: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """(n, P): row i is ∂(v·f(x_i))/∂θ, one VJP per example instead of c."""
    params = {k: p.detach() for k, p in params.items()}
    f = _single(model)

    def scalar(p: Params, xi: torch.Tensor) -> torch.Tensor:
        return (f(p, xi) * v_C).sum()

    grads = vmap(grad(scalar), in_dims=(None, 0), chunk_size=chunk)(params, x)
    return torch.cat([grads[name].reshape(x.shape[0], -1) for name in params], dim=1)
