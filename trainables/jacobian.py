"""Per-example Jacobians of the network outputs, and flat ↔ dict parameter vectors."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from trainables.linearise import _chain, vjp_scalar  # shared with the linearised step

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


def _dense(params: Params) -> Params:
    """Parameters in the default layout for per-example reverse mode under vmap: the CPU's
    float64 convolution backward (slow_conv2d) refuses a channels-last weight's gradient."""
    return {k: v.contiguous() for k, v in params.items()}


def jacobian(model: nn.Module, params: Params, x: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """J as (n, c, P): row (i, a) is ∂f_a(x_i)/∂θ, parameters in `params` order."""
    params = {k: v.detach() for k, v in params.items()}
    chain = factor_chain(model, params)
    if chain is not None:  # from per-layer factors: one forward, c batched backward passes
        return jacobian_from_factors(chain_factors(chain, params, x, None), params)
    jac = vmap(jacrev(_single(model)), in_dims=(None, 0), chunk_size=chunk)(
        _dense(params), x.contiguous()
    )
    n = x.shape[0]
    c = next(iter(jac.values())).shape[1]
    return torch.cat([jac[name].reshape(n, c, -1) for name in params], dim=2)


def projected_jacobian(
    model: nn.Module, params: Params, x: torch.Tensor, v_C: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """(n, P): row i is ∂(v·f(x_i))/∂θ, one VJP per example instead of c."""
    params = {k: p.detach() for k, p in params.items()}
    chain = factor_chain(model, params)
    if chain is not None:  # one backward pass with cotangent v on every example
        v_1xNxC = v_C.expand(1, x.shape[0], v_C.shape[0])
        return jacobian_from_factors(chain_factors(chain, params, x, v_1xNxC), params)[:, 0]
    f = _single(model)

    def scalar(p: Params, xi: torch.Tensor) -> torch.Tensor:
        return (f(p, xi) * v_C).sum()

    grads = vmap(grad(scalar), in_dims=(None, 0), chunk_size=chunk)(_dense(params), x.contiguous())
    return torch.cat([grads[name].reshape(x.shape[0], -1) for name in params], dim=1)


# ---- Jacobians and kernels from per-layer factors, for chains of Linear/Conv2d layers ----------
# For a Linear layer with input a_i and output z_i, ∂f_a(x_i)/∂W = b_ia a_iᵀ and ∂/∂bias = b_ia,
# where b_ia = ∂f_a(x_i)/∂z_i. So its share of K is (b_ia·b_jb)(a_i·a_j + 1): a kernel of the
# n·c backprop vectors times one of the n inputs, (nc)²·d_out + n²·d_in FLOPs per layer, where
# J Jᵀ costs (nc)²·P. A Conv2d layer's per-example gradient is Σ_s b_ia,s ⊗ patch_i,s (patches
# by unfold). One forward and c batched backward passes (activations only) give every b, with
# no per-example vmap.
_FACTOR_FREE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Flatten, nn.Identity, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d)  # fmt: skip


class ChainFactors:
    """Each parametric layer's input and backprop vectors B (k × n × output shape)."""

    def __init__(self, out_BxC: torch.Tensor, layers: list[tuple[nn.Module, str, str | None, torch.Tensor]]):  # fmt: skip
        self.out_BxC = out_BxC
        self.layers = layers  # (layer, weight key, bias key or None, its input) per layer
        self.B: list[torch.Tensor] = []

    @property
    def all_linear(self) -> bool:
        return all(isinstance(layer, nn.Linear) for layer, *_ in self.layers)

    def input_kernels(self) -> list[torch.Tensor]:
        """A Aᵀ (+1 where the layer has a bias), n × n per layer (Linear layers only)."""
        return [A @ A.T + (1.0 if b else 0.0) for _, _, b, A in self.layers]


def factor_chain(model: nn.Module, params: Params) -> list | None:
    """The model's layer chain when every parametric layer is Linear or an ungrouped Conv2d
    and the others are activations, pooling, Flatten or Identity; else None."""
    chain = _chain(model, params)
    if chain is None:
        return None
    for layer, _, _ in chain:
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                return None
        elif not isinstance(layer, (nn.Linear, *_FACTOR_FREE)):
            return None
    return chain


def chain_factors(
    chain: list, params: Params, x: torch.Tensor, cotangents_KxBxC: torch.Tensor | None
) -> ChainFactors:
    """One forward; then B for each given output cotangent (k of them, batched), or for the
    c one-hot cotangents when None."""
    h, zs, layers = x, [], []
    with torch.enable_grad():
        for layer, w, b in chain:
            if isinstance(layer, nn.Linear | nn.Conv2d):
                if isinstance(layer, nn.Linear) and h.ndim != 2:
                    raise ValueError("chain_factors: Linear layers need (n, d) inputs")
                layers.append((layer, w, b, h.detach()))
                weight, bias = params[w].detach(), None if b is None else params[b].detach()
                h = F.linear(h, weight, bias) if isinstance(layer, nn.Linear) else layer._conv_forward(h, weight, bias)  # fmt: skip
                if not h.requires_grad:
                    h.requires_grad_()  # the first z is a leaf: the graph starts here
                zs.append(h)
            else:
                h = layer(h)
        factors = ChainFactors(h.detach(), layers)
        n, c = h.shape
        if cotangents_KxBxC is None:
            eye = torch.eye(c, dtype=h.dtype, device=h.device)
            cotangents_KxBxC = eye.unsqueeze(1).expand(c, n, c)
        if len(cotangents_KxBxC) == 1:  # one scalar backward: faster than vmap, and no sympy
            grads = torch.autograd.grad(vjp_scalar(h, cotangents_KxBxC[0]), zs)
            factors.B = [g.unsqueeze(0) for g in grads]
        else:
            factors.B = list(
                torch.autograd.grad(h, zs, grad_outputs=cotangents_KxBxC, is_grads_batched=True)
            )
    return factors


def jacobian_from_factors(factors: ChainFactors, like: Params) -> torch.Tensor:
    """Per-example Jacobian rows for each cotangent: (n, k, P), parameters in `like` order.

    Written block by block into one buffer (a cat of the blocks costs as much as building them).
    """
    k, n = factors.B[0].shape[:2]
    sizes = {name: t.numel() for name, t in like.items()}
    offsets = dict(zip(sizes, itertools.accumulate([0, *sizes.values()]), strict=False))
    ref = factors.out_BxC
    J_NxKxP = torch.empty(n, k, sum(sizes.values()), dtype=ref.dtype, device=ref.device)

    def block(name: str) -> torch.Tensor:
        return J_NxKxP[:, :, offsets[name] : offsets[name] + sizes[name]]

    for B, (layer, w, b, h_in) in zip(factors.B, factors.layers, strict=True):
        B_NxKxOxS = B.transpose(0, 1).reshape(n, k, B.shape[2], -1)  # S = 1 for Linear
        o, s = B_NxKxOxS.shape[2:]
        if isinstance(layer, nn.Linear):
            U_NxSxI = h_in.unsqueeze(1)
        else:  # patches: (n, C_in·kh·kw, S)
            U = F.unfold(h_in, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
            U_NxSxI = U.transpose(1, 2)
        # per example: (k·o × S) @ (S × C_in·kh·kw), straight into the (n, k, o·i) layout
        J_NxKOxI = torch.bmm(B_NxKxOxS.reshape(n, k * o, s), U_NxSxI)
        block(w).view(n, k, o, -1).copy_(J_NxKOxI.view(n, k, o, -1))
        if b is not None:
            block(b).copy_(B_NxKxOxS.sum(-1))
    return J_NxKxP


def kernel_from_factors(factors: ChainFactors) -> torch.Tensor:
    """The full n·c × n·c kernel J Jᵀ, rows (i, a)."""
    c, n, _ = factors.B[0].shape
    K = torch.zeros(n, c, n, c, dtype=factors.out_BxC.dtype, device=factors.out_BxC.device)
    for B_CxNxD, AA_NxN in zip(factors.B, factors.input_kernels(), strict=True):
        B_NCxD = B_CxNxD.transpose(0, 1).reshape(n * c, -1)
        K += (B_NCxD @ B_NCxD.T).view(n, c, n, c) * AA_NxN[:, None, :, None]
    return K.view(n * c, n * c)


def summed_kernel_from_factors(factors: ChainFactors) -> torch.Tensor:
    """Σ_k (J_k J_kᵀ) over the cotangents k the factors were built with (n × n): the trace
    kernel for the c one-hot cotangents, the projected one for a single cotangent v."""
    K_NxN = 0
    for B_KxNxD, AA_NxN in zip(factors.B, factors.input_kernels(), strict=True):
        K_NxN = K_NxN + torch.einsum("knd,kmd->nm", B_KxNxD, B_KxNxD) * AA_NxN
    return K_NxN


def transpose_from_factors(factors: ChainFactors, coef_BxC: torch.Tensor, like: Params):
    """Jᵀ u for u of shape (n, c), as a flat vector in `like` order."""
    grads: dict[str, torch.Tensor] = {}
    for B_CxNxD, (_, w, b, A_NxD) in zip(factors.B, factors.layers, strict=True):
        U_NxD = torch.einsum("cnd,nc->nd", B_CxNxD, coef_BxC)
        grads[w] = U_NxD.T @ A_NxD
        if b is not None:
            grads[b] = U_NxD.sum(0)
    return flatten({name: grads[name] for name in like})


def output_kernel(model: nn.Module, params: Params, x: torch.Tensor):
    """(K = J Jᵀ as n·c × n·c with rows (i, a), f(x), u ↦ Jᵀu as a flat vector).

    Chains of Linear layers: K from the factors, J never exists. Chains with Conv2d: J from the
    factors. Other models: J by vmap over per-example reverse mode.
    """
    params = {k: v.detach() for k, v in params.items()}
    chain = factor_chain(model, params)
    if chain is not None:
        factors = chain_factors(chain, params, x, None)
        out_BxC = factors.out_BxC
        if factors.all_linear:
            K = kernel_from_factors(factors)
            return K, out_BxC, lambda u_BxC: transpose_from_factors(factors, u_BxC, params)
        J_NCxP = jacobian_from_factors(factors, params).reshape(out_BxC.numel(), -1)
    else:
        with torch.no_grad():
            out_BxC = functional_call(model, params, (x,))
        J_NCxP = jacobian(model, params, x).reshape(out_BxC.numel(), -1)
    return J_NCxP @ J_NCxP.T, out_BxC, lambda u_BxC: J_NCxP.T @ u_BxC.reshape(-1)
