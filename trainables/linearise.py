"""The linearised model f(θ_s) + J(θ_s)(θ − θ_s), its loss gradient, and the losses.

One linearised step is one forward pass at θ_s that carries the tangent J(θ_s)δ as forward-mode
dual tensors (δ = θ − θ_s), then one backward pass at θ_s for J(θ_s)ᵀg with g = ∂L/∂f_lin.
There is no double-backward through the JVP and no second forward pass: ≈ 5/3 of a plain step.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trainables.models import CNN, MLP

Params = dict[str, torch.Tensor]


def vjp_scalar(out: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """⟨out, cotangent⟩ as a scalar: its gradient is the VJP uᵀ∂out, bit for bit (the backward
    of sum and mul hand exactly u to `out`). autograd.grad(out, grad_outputs=u) is the same VJP
    but imports sympy (via torch.fx's symbolic shapes): slow in every fresh trial process."""
    return (out * cotangent.detach()).sum()


# ---- losses ------------------------------------------------------------------------------
def loss_fn(kind: str, out_BxC: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
    """Mean over examples. MSE is ½‖f − onehot(y)‖² per example, so its output Hessian is I/n."""
    if kind == "cross_entropy":
        return F.cross_entropy(out_BxC, y_B)
    target_BxC = F.one_hot(y_B, out_BxC.shape[1]).to(out_BxC.dtype)
    return 0.5 * (out_BxC - target_BxC).pow(2).sum(1).mean()


def accuracy(out_BxC: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
    return (out_BxC.argmax(1) == y_B).to(out_BxC.dtype).mean()


def output_grad(kind: str, out_BxC: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
    """g = ∂L/∂f in closed form (mean-reduced losses)."""
    n, c = out_BxC.shape
    target_BxC = F.one_hot(y_B, c).to(out_BxC.dtype)
    pred_BxC = out_BxC.softmax(1) if kind == "cross_entropy" else out_BxC
    return (pred_BxC - target_BxC) / n


def output_hessian_vp(kind: str, out_BxC: torch.Tensor, v_BxC: torch.Tensor) -> torch.Tensor:
    """H v with H = ∂²L/∂f²: (diag(p) − ppᵀ)/n per example for cross-entropy, I/n for MSE."""
    n = out_BxC.shape[0]
    if kind == "mse":
        return v_BxC / n
    p_BxC = out_BxC.softmax(1)
    return (p_BxC * v_BxC - p_BxC * (p_BxC * v_BxC).sum(1, keepdim=True)) / n


def output_hessian(kind: str, out_BxC: torch.Tensor) -> torch.Tensor:
    """The block-diagonal H as a dense (n·c × n·c) matrix (for the exact solver and tests)."""
    n, c = out_BxC.shape
    if kind == "mse":
        return torch.eye(n * c, dtype=out_BxC.dtype, device=out_BxC.device) / n
    p_BxC = out_BxC.softmax(1)
    blocks_BxCxC = torch.diag_embed(p_BxC) - p_BxC.unsqueeze(2) * p_BxC.unsqueeze(1)
    return torch.block_diag(*blocks_BxCxC) / n


# ---- the linearised model ----------------------------------------------------------------
def linearised_forward(
    model: nn.Module,
    params_s: Mapping[str, torch.Tensor],
    delta: Mapping[str, torch.Tensor] | None,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(f(x; θ_s), J(x; θ_s)δ) in one forward pass; the tangent is None when δ is None.

    The primal is differentiable in params_s (when they require grad); the tangent is a value
    only: never differentiate through it. Chains of known layers take the layer-wise path.
    """
    chain = _chain(model, params_s)
    if chain is not None:
        return _chain_forward(chain, params_s, delta, x)
    return _dual_forward(model, params_s, delta, x)


def _dual_forward(
    model: nn.Module,
    params_s: Mapping[str, torch.Tensor],
    delta: Mapping[str, torch.Tensor] | None,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The general path: forward-mode dual tensors through functional_call (any model)."""
    if delta is None:
        return functional_call(model, dict(params_s), (x,)), None
    with fwAD.dual_level():
        duals = {name: fwAD.make_dual(p, delta[name]) for name, p in params_s.items()}
        primal, tangent = fwAD.unpack_dual(functional_call(model, duals, (x,)))
    return primal, tangent


def linearised_grad(
    model: nn.Module,
    params_s: Params,
    delta: Params | None,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """J(θ_s)ᵀ ∂L/∂f_lin for the batch: (grads in params_s order, loss, f_lin outputs).

    δ=None means θ = θ_s (just relinearised): then f_lin = f and this is the ordinary gradient.
    """
    leaves = {name: p.detach().requires_grad_() for name, p in params_s.items()}
    primal, tangent = linearised_forward(model, leaves, delta, x)
    # The tangent is a value: the add's backward hands g = ∂L/∂f_lin to the primal unchanged, so
    # this is one backward from a scalar, Jᵀg, and at K=1 exactly plain's loss.backward().
    f_lin = primal if tangent is None else primal + tangent.detach()
    value = loss_fn(loss, f_lin, y)
    grads = torch.autograd.grad(value, list(leaves.values()))
    return list(grads), value.detach(), f_lin.detach()


@torch.no_grad()
def linearised_predict(
    model: nn.Module,
    params_s: Params,
    delta: Params | None,
    x: torch.Tensor,
    batch: int = 2048,
) -> torch.Tensor:
    """f_lin on a whole set, in batches, without grad (forward AD still runs under no_grad)."""
    outs = []
    for start in range(0, len(x), batch):
        primal, tangent = linearised_forward(model, params_s, delta, x[start : start + batch])
        outs.append(primal if tangent is None else primal + tangent)
    return torch.cat(outs)


# ---- the layer-wise path for chains of known layers ----------------------------------------
# MLP and CNN are `self.net(x)` with `net` an nn.Sequential of the layers below. For them the
# tangent J(θ_s)δ is pushed through each layer's own JVP rule as ordinary tensor ops under
# no_grad, after an ordinary autograd forward for the primal. Same maths as the dual path
# (tests/test_performance_paths.py checks both against each other and a dense Jacobian), but
# without per-op dual dispatch, functional_call's parameter swap, or autograd bookkeeping for
# the tangent: the backward pass is exactly a plain step's. A model whose forward is anything
# other than its chain must not be listed in _CHAIN_MODELS.
_CHAIN_MODELS: tuple[type[nn.Module], ...] = (nn.Sequential, MLP, CNN)
_LINEAR_LIKE = (nn.Flatten, nn.Identity, nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # tangent = layer(t)
_CHAIN_LAYERS = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm, nn.ReLU, nn.Tanh, nn.GELU)
_chains: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (chain, names)

# one link: (layer, its weight's key in params, its bias's key, or None where it has none)
Link = tuple[nn.Module, str | None, str | None]


def _chain(model: nn.Module, params: Mapping[str, torch.Tensor]) -> list[Link] | None:
    """The model as a list of links, or None when it is not a chain of known layers."""
    if model not in _chains:
        chain = _build_chain(model)
        names = None if chain is None else {n for _, w, b in chain for n in (w, b) if n}
        _chains[model] = (chain, names)
    chain, names = _chains[model]
    return chain if chain is not None and names == params.keys() else None


def _build_chain(model: nn.Module) -> list[Link] | None:
    if type(model) not in _CHAIN_MODELS:
        return None
    seq, prefix = (model, "") if isinstance(model, nn.Sequential) else (model.net, "net.")
    if not isinstance(seq, nn.Sequential):
        return None
    chain: list[Link] = []
    for i, layer in enumerate(seq):
        if not isinstance(layer, _CHAIN_LAYERS + _LINEAR_LIKE) or getattr(layer, "inplace", False):
            return None
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            return None
        own = {name for name, _ in layer.named_parameters()}
        if not own <= {"weight", "bias"}:
            return None
        chain.append(
            (
                layer,
                f"{prefix}{i}.weight" if "weight" in own else None,
                f"{prefix}{i}.bias" if "bias" in own else None,
            )
        )
    return chain


def _chain_forward(
    chain: list[Link],
    params: Mapping[str, torch.Tensor],
    delta: Mapping[str, torch.Tensor] | None,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    grad_on = torch.is_grad_enabled()
    h, t = x, None  # t: the tangent of h; None while it is still exactly 0
    for layer, w, b in chain:
        h_out = _layer(layer, h, _get(params, w), _get(params, b))
        if delta is not None:  # layer by layer, so only autograd's saved tensors stay alive
            torch.set_grad_enabled(False)
            t = _layer_tangent(
                layer, h, h_out, t, _get(params, w), _get(delta, w), _get(params, b), _get(delta, b)
            )
            torch.set_grad_enabled(grad_on)
        h = h_out
    if delta is None:
        return h, None
    return h, torch.zeros_like(h) if t is None else t


def _get(params: Mapping[str, torch.Tensor] | None, name: str | None) -> torch.Tensor | None:
    return None if name is None or params is None else params[name]


def _layer(layer: nn.Module, h: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None):
    """layer(h) with the given parameters: the very ops its own forward runs."""
    if isinstance(layer, nn.Linear):
        return F.linear(h, w, b)
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(h, w, b)
    if isinstance(layer, nn.GroupNorm):
        return F.group_norm(h, layer.num_groups, w, b, layer.eps)
    if isinstance(layer, nn.LayerNorm):
        return F.layer_norm(h, layer.normalized_shape, w, b, layer.eps)
    return layer(h)


def _layer_tangent(layer, h_in, h_out, t, w, dw, b, db) -> torch.Tensor | None:
    """The tangent of layer's output given its input's tangent t (None: 0) and (dw, db)."""
    if isinstance(layer, nn.Linear | nn.Conv2d):
        t_out = _layer(layer, h_in, dw, db)  # ∂/∂θ: the layer at its parameters' tangent
        if t is None:
            return t_out
        if t.ndim == 2 and isinstance(layer, nn.Linear):
            return t_out.addmm_(t, w.t())  # + ∂/∂input, fused into the same buffer
        return t_out.add_(_layer(layer, t, w, None))
    if isinstance(layer, nn.GroupNorm | nn.LayerNorm):
        with fwAD.dual_level():
            dual = lambda p, dp: p if p is None or dp is None else fwAD.make_dual(p, dp)  # noqa: E731
            h = h_in if t is None else fwAD.make_dual(h_in, t)
            return fwAD.unpack_dual(_layer(layer, h, dual(w, dw), dual(b, db))).tangent
    if t is None:
        return None
    if isinstance(layer, nn.ReLU):
        return torch.ops.aten.threshold_backward(t, h_out, 0)
    if isinstance(layer, nn.Tanh):
        return torch.ops.aten.tanh_backward(t, h_out)
    if isinstance(layer, nn.GELU):
        return torch.ops.aten.gelu_backward(t, h_in, approximate=layer.approximate)
    return layer(t)  # linear layers without parameters: pooling, flatten, identity


def chain_linearisation(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    *,
    scalar_vjp: bool = False,
) -> tuple[torch.Tensor, Callable, Callable] | None:
    """(f(x; θ), δ ↦ J δ, u ↦ Jᵀu) from one forward pass, for repeated products (CG).

    J δ reruns only the tangent pass over the stored activations; Jᵀu is a backward pass through
    the retained graph. Both take and give dicts of tensors. None when the model is not a chain.
    `scalar_vjp` takes Jᵀu as the gradient of ⟨f, u⟩ (`vjp_scalar`), which never imports sympy:
    for callers that make a few dozen products in a process that must stay light (the
    stability measures of plain and linearised trials), not CG's hundreds.
    """
    chain = _chain(model, params)
    if chain is None:
        return None
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    links, h = [], x
    with torch.enable_grad():
        for layer, w, b in chain:
            h_out = _layer(layer, h, _get(leaves, w), _get(leaves, b))
            links.append((layer, w, b, h.detach(), h_out.detach()))
            h = h_out
    out = h

    @torch.no_grad()
    def jvp(delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        t = None
        for layer, w, b, h_in, h_out in links:
            t = _layer_tangent(
                layer,
                h_in,
                h_out,
                t,
                _get(params, w),
                _get(delta, w),
                _get(params, b),
                _get(delta, b),
            )
        return torch.zeros_like(out) if t is None else t

    def vjp(u: torch.Tensor) -> dict[str, torch.Tensor]:
        if scalar_vjp:
            grads = torch.autograd.grad(
                vjp_scalar(out, u), list(leaves.values()), retain_graph=True
            )
            return dict(zip(leaves, grads, strict=True))
        # grad_outputs, not vjp_scalar: CG calls this hundreds of times a step, so the scalar's
        # extra mul and sum, paid at every call, cost more than sympy's one import
        grads = torch.autograd.grad(out, list(leaves.values()), grad_outputs=u, retain_graph=True)
        return dict(zip(leaves, grads, strict=True))

    return out.detach(), jvp, vjp
