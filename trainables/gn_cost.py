"""Which Gauss-Newton solver is faster here: a cost model for ``solver="auto"``.

The solvers themselves are in gauss_newton.py. This module predicts their seconds from FLOP
counts and device rates (:func:`solver_costs`), CG's iteration count from the Rayleigh quotient
of G at the gradient (:func:`predicted_cg_iterations`), and picks one (:func:`choose_solver`).
benchmarks/gn_solvers.py checks the predictions against timed solves and fits the rates.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from trainables.jacobian import Params, factor_chain
from trainables.models import CNN, MLP


@dataclass(frozen=True)
class DeviceRates:
    """Sustained rates of one kind of device, fitted by benchmarks/gn_solvers.py (--fit)."""

    mm_flops: float  # FLOP/s of matmuls in forward/backward passes
    conv_flops: float  # FLOP/s of convolutions in passes
    dense_flops: float  # FLOP/s of the kernel GEMMs and the n·c × n·c solve
    memory_bytes: float  # bytes/s written when J is materialised
    layer_s: float  # fixed seconds per layer per CG iteration (dispatch, Python)
    exact_s: float  # fixed seconds per exact solve


# CPU: fitted with gn_solvers --fit. CUDA: a placeholder of the right order until it is fitted
# on a GPU (benchmarks/gpu_check.sh runs gn_solvers --device cuda --fit).
DEVICE_RATES = {
    "cpu": DeviceRates(80e9, 35e9, 30e9, 3e9, 1.0e-4, 2.5e-3),
    "cuda": DeviceRates(20e12, 10e12, 5e12, 1e12, 6e-5, 5e-3),
}
MIN_CG_ITERS = 2  # CG iterations to cg_tol=1e-6 even at the largest damping
# iters ≈ MIN_CG_ITERS + a·(q/λ)^β at cg_tol=1e-6 (see predicted_cg_iterations), fitted by
# gn_solvers.py on MLPs and CNNs, both losses, at init and after training. A convolutional
# spectrum is dominated by fewer eigenvalues, so CG needs fewer iterations there.
CG_LAWS = {"dense": (10.0, 0.4), "conv": (3.5, 0.3)}


@dataclass(frozen=True)
class SolverCosts:
    """Predicted seconds of the exact solve and of one CG iteration (JVP, H, VJP)."""

    exact_s: float
    iteration_s: float
    jacobian_bytes: int  # what the exact path materialises (0: J never exists)
    law: str = "dense"  # which CG iteration law applies (CG_LAWS)


def predicted_cg_iterations(
    damping: float, rayleigh: float, tol: float, max_iter: int, law: str = "dense"
) -> float:
    """CG iterations to ‖r‖ ≤ tol·‖b‖ on G + λI, from q = bᵀGb/bᵀb, the Rayleigh quotient of G
    at the gradient b (CG's own first product): 2 + a·(q/λ)^β at tol = 1e-6, ∝ log(1/tol).

    Empirical (CG_LAWS): a guide for choosing, not an exact count. Where the count reaches
    max_iter, CG stops short of tol, so exact is then also the accurate choice.
    """
    if damping <= 0:
        return float(max_iter)
    a, beta = CG_LAWS[law]
    scale = math.log(1 / max(tol, 1e-30)) / math.log(1e6)
    return min(float(max_iter), MIN_CG_ITERS + a * scale * (max(rayleigh, 0) / damping) ** beta)


def choose_solver(
    solver: str,
    n: int,
    c: int,
    p: int,
    max_dim: int,
    itemsize: int = 4,
    costs: SolverCosts | None = None,
    damping: float | None = None,
    rayleigh: float | None = None,
    cg_tol: float = 1e-6,
    cg_max_iter: int = 500,
    relative: bool = False,
) -> str:
    """ "exact", "cg", or (auto only) "probe": run CG's first product, then ask with `rayleigh`.

    auto: cg unless the n·c system fits (n·c ≤ max_dim, and a materialised J ≤ 1 GiB). Without
    costs, exact whenever it fits. With costs: exact when even CG's best case (its setup and
    MIN_CG_ITERS) is not 1.2× faster; cg when exact is slower than CG's worst case (cg_max_iter);
    in between, the predicted iteration count at this damping decides.
    """
    if solver != "auto":
        return solver
    j_bytes = n * c * p * itemsize if costs is None else costs.jacobian_bytes
    if n * c > max_dim or j_bytes > 2**30:
        return "cg"
    if costs is None:
        return "exact"
    setup = 1.5 + (8 if relative else 0)  # gradient, first product, Hutchinson probes
    if costs.exact_s <= 1.2 * (setup + MIN_CG_ITERS) * costs.iteration_s:
        return "exact"
    if costs.exact_s >= (setup + cg_max_iter) * costs.iteration_s:
        return "cg"
    if rayleigh is None or damping is None:
        return "probe"
    remaining = predicted_cg_iterations(damping, rayleigh, cg_tol, cg_max_iter, costs.law) - 1
    return "cg" if remaining * costs.iteration_s < costs.exact_s else "exact"


def solver_costs(
    model: nn.Module, params: Params, x: torch.Tensor, c: int, loss: str
) -> SolverCosts:
    """Predicted costs of both solvers on this model and batch, from FLOP counts."""
    rates = DEVICE_RATES.get(x.device.type, DEVICE_RATES["cpu"])
    n, p = x.shape[0], sum(t.numel() for t in params.values())
    mm, conv = (n * f for f in _flops_per_example(model, params, x))
    pass_s = mm / rates.mm_flops + conv / rates.conv_flops  # one forward pass
    chain = factor_chain(model, params)
    layers = len(chain) if chain is not None else 12
    # CG: tangent pass (≈ 2 forwards) and backward (≈ 2); a generic model reruns its forward
    iteration_s = layers * rates.layer_s + (4 if chain is not None else 5) * pass_s
    nc = n * c
    solve = nc**3 / 3 if loss == "mse" else 2 * nc**3 / 3  # Cholesky or LU
    dense = solve + 2 * nc * nc * c  # and H·K block by block
    linear = chain is not None and not any(isinstance(lay, nn.Conv2d) for lay, _, _ in chain)
    if linear:  # K from factors: c backward passes, then per layer (nc)²·d_out + n²·d_in
        widths = [(lay.in_features, lay.out_features) for lay, _, _ in chain if isinstance(lay, nn.Linear)]  # fmt: skip
        dense += sum(2 * nc * nc * d_out + 2 * n * n * d_in for d_in, d_out in widths)
        exact_s = rates.exact_s + (1 + c) * pass_s + dense / rates.dense_flops
        return SolverCosts(exact_s, iteration_s, 0)
    law = "conv" if any(isinstance(m, nn.Conv2d) for m in model.modules()) else "dense"
    j_bytes = nc * p * x.element_size()
    dense += 2 * nc * nc * p + 2 * nc * p  # J Jᵀ and Jᵀu
    # a generic model's J comes from vmap, which the model charges as several passes per row
    jacobian_s = (1 + 2 * c) * pass_s * (1 if chain is not None else 4)
    exact_s = rates.exact_s + jacobian_s + j_bytes / rates.memory_bytes + dense / rates.dense_flops
    return SolverCosts(exact_s, iteration_s, j_bytes, law)


# ---- counting FLOPs ---------------------------------------------------------------------
_flop_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {shape: flops}
# Modules whose forward does no matmul or convolution (FlopCounterMode counts neither), or only
# that of their children: a model made of these, Linear and Conv2d is counted by module hooks.
_NO_FLOPS = (nn.Sequential, nn.Flatten, nn.Identity, nn.ReLU, nn.Tanh, nn.GELU, nn.LayerNorm,
             nn.GroupNorm, nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # fmt: skip


def _flops_per_example(model: nn.Module, params: Params, x: torch.Tensor) -> tuple[float, float]:
    """(matmul, convolution) FLOPs of one example's forward pass, counted once per input shape."""
    cache = _flop_cache.setdefault(model, {})
    key = (tuple(x.shape[1:]), x.dtype, x.device.type)
    if key not in cache:
        counted = _count_flops_by_layer(model, params, x[:1])
        cache[key] = counted if counted is not None else _count_flops_traced(model, params, x[:1])
    return cache[key]


def _count_flops_by_layer(
    model: nn.Module, params: Params, x: torch.Tensor
) -> tuple[float, float] | None:
    """FlopCounterMode's count from Linear and Conv2d shapes seen by forward hooks (2·m·k·n per
    matmul, 2·out·(c_in/groups)·kernel per convolution); None for any other kind of module.
    FlopCounterMode itself imports torch._dynamo, which is slow in every fresh trial process."""
    modules = list(model.modules())
    if not all(
        type(m) in (MLP, CNN, nn.Linear, nn.Conv2d, *_NO_FLOPS) for m in modules
    ):  # a subclass may do its own matmuls
        return None
    flops = [0, 0]

    def count(layer: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(layer, nn.Linear):
            flops[0] += 2 * inputs[0].numel() * layer.out_features
        else:
            kernel = math.prod(layer.kernel_size)
            flops[1] += 2 * out.numel() * (layer.in_channels // layer.groups) * kernel

    hooks = [m.register_forward_hook(count) for m in modules if type(m) in (nn.Linear, nn.Conv2d)]
    try:
        with torch.no_grad():
            functional_call(model, params, (x,))
    finally:
        for hook in hooks:
            hook.remove()
    return float(flops[0]), float(flops[1])


def _count_flops_traced(model: nn.Module, params: Params, x: torch.Tensor) -> tuple[float, float]:
    """Any model: torch's FlopCounterMode over one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        functional_call(model, params, (x,))
    counts = counter.get_flop_counts().get("Global", {})
    conv = sum(v for op, v in counts.items() if "conv" in str(op))
    return float(counter.get_total_flops() - conv), float(conv)
