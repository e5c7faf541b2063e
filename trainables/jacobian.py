"""Per-example Jacobians of the network outputs, and flat ↔ dict parameter vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from trainables.linearise import _chain  # chain detection, shared with the linearised step

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


# ---- the output kernel K = J Jᵀ without materialising J, for chains of Linear layers --------
# For a Linear layer with input a_i and output z_i, ∂f_a(x_i)/∂W = b_ia a_iᵀ and ∂/∂bias = b_ia,
# where b_ia = ∂f_a(x_i)/∂z_i. So its share of K is (b_ia·b_jb)(a_i·a_j + 1): a kernel of the
# n·c backprop vectors times one of the n inputs, (nc)²·d_out + n²·d_in FLOPs per layer, where
# J Jᵀ costs (nc)²·P. One forward and c batched backward passes (activations only) give every b.
class LinearChainFactors:
    """The inputs A (n × d_in) and backprop vectors B (c × n × d_out) of each Linear layer."""

    def __init__(self, out_BxC: torch.Tensor, layers: list[tuple[str, str | None, torch.Tensor]]):
        self.out_BxC = out_BxC
        self.layers = layers  # (weight key, bias key or None, input A) per Linear layer
        self.B: list[torch.Tensor] = []

    def input_kernels(self) -> list[torch.Tensor]:
        """A Aᵀ (+1 where the layer has a bias), n × n per layer."""
        return [A @ A.T + (1.0 if b else 0.0) for _, b, A in self.layers]


def linear_chain(model: nn.Module, params: Params) -> list | None:
    """The model's layer chain when every parametric layer is Linear and the rest act per
    element (activations, Flatten, Identity); else None."""
    chain = _chain(model, params)
    allowed = (nn.Linear, nn.ReLU, nn.Tanh, nn.GELU, nn.Flatten, nn.Identity)
    if chain is None or not all(isinstance(layer, allowed) for layer, _, _ in chain):
        return None
    return chain


def linear_chain_factors(
    chain: list, params: Params, x: torch.Tensor, cotangents_KxBxC: torch.Tensor | None
) -> LinearChainFactors:
    """One forward; then B for each given output cotangent (K of them, batched), or for the
    c one-hot cotangents when None."""
    h, zs, layers = x, [], []
    with torch.enable_grad():
        for layer, w, b in chain:
            if isinstance(layer, nn.Linear):
                if h.ndim != 2:
                    raise ValueError("linear_chain_factors: Linear layers need (n, d) inputs")
                layers.append((w, b, h.detach()))
                h = F.linear(h, params[w].detach(), None if b is None else params[b].detach())
                if not h.requires_grad:
                    h.requires_grad_()  # the first z is a leaf: the graph starts here
                zs.append(h)
            else:
                h = layer(h)
        factors = LinearChainFactors(h.detach(), layers)
        n, c = h.shape
        if cotangents_KxBxC is None:
            eye = torch.eye(c, dtype=h.dtype, device=h.device)
            cotangents_KxBxC = eye.unsqueeze(1).expand(c, n, c)
        factors.B = list(
            torch.autograd.grad(h, zs, grad_outputs=cotangents_KxBxC, is_grads_batched=True)
        )
    return factors


def kernel_from_factors(factors: LinearChainFactors) -> torch.Tensor:
    """The full n·c × n·c kernel J Jᵀ, rows (i, a)."""
    c, n, _ = factors.B[0].shape
    K = torch.zeros(n, c, n, c, dtype=factors.out_BxC.dtype, device=factors.out_BxC.device)
    for B_CxNxD, AA_NxN in zip(factors.B, factors.input_kernels(), strict=True):
        B_NCxD = B_CxNxD.transpose(0, 1).reshape(n * c, -1)
        K += (B_NCxD @ B_NCxD.T).view(n, c, n, c) * AA_NxN[:, None, :, None]
    return K.view(n * c, n * c)


def summed_kernel_from_factors(factors: LinearChainFactors) -> torch.Tensor:
    """Σ_k (J_k J_kᵀ) over the cotangents k the factors were built with (n × n): the trace
    kernel for the c one-hot cotangents, the projected one for a single cotangent v."""
    K_NxN = 0
    for B_KxNxD, AA_NxN in zip(factors.B, factors.input_kernels(), strict=True):
        K_NxN = K_NxN + torch.einsum("knd,kmd->nm", B_KxNxD, B_KxNxD) * AA_NxN
    return K_NxN


def transpose_from_factors(factors: LinearChainFactors, coef_BxC: torch.Tensor, like: Params):
    """Jᵀ u for u of shape (n, c), as a flat vector in `like` order."""
    grads: dict[str, torch.Tensor] = {}
    for B_CxNxD, (w, b, A_NxD) in zip(factors.B, factors.layers, strict=True):
        U_NxD = torch.einsum("cnd,nc->nd", B_CxNxD, coef_BxC)
        grads[w] = U_NxD.T @ A_NxD
        if b is not None:
            grads[b] = U_NxD.sum(0)
    return flatten({name: grads[name] for name in like})


def output_kernel(model: nn.Module, params: Params, x: torch.Tensor):
    """(K = J Jᵀ as n·c × n·c with rows (i, a), f(x), u ↦ Jᵀu as a flat vector).

    Structured for chains of Linear layers (J never exists); otherwise J is materialised once.
    """
    params = {k: v.detach() for k, v in params.items()}
    chain = linear_chain(model, params)
    if chain is not None:
        factors = linear_chain_factors(chain, params, x, None)
        return (
            kernel_from_factors(factors),
            factors.out_BxC,
            lambda u_BxC: transpose_from_factors(factors, u_BxC, params),
        )
    with torch.no_grad():
        out_BxC = functional_call(model, params, (x,))
    n, c = out_BxC.shape
    J_NCxP = jacobian(model, params, x).reshape(n * c, -1)
    return J_NCxP @ J_NCxP.T, out_BxC, lambda u_BxC: J_NCxP.T @ u_BxC.reshape(-1)
