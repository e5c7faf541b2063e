"""Damped Gauss-Newton directions d = (G + λI)⁻¹∇L with G = JᵀHJ, exact or matrix-free.

- exact (kernel form): d = Jᵀ(H·JJᵀ + λI)⁻¹g, an n·c × n·c solve, exact at any λ > 0.
  K = JJᵀ is built from per-layer factors for chains of Linear layers ((nc)²·d FLOPs a layer,
  J never exists; jacobian.output_kernel), else from J materialised once. H·K goes block by
  block; the solve is Cholesky for MSE (K/n + λI is SPD) and LU for cross-entropy.
  At λ = 0 it returns the limit G⁺∇L through the symmetric form S·JJᵀ·S with S = H^½.
- cg: conjugate gradient on G + λI; each GGN-vector product is one JVP, H, then one VJP, all on
  one forward pass (chains rerun only the tangent pass; linearise.chain_linearisation).
- auto: whichever a cost model predicts is faster (see choose_solver).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from trainables.jacobian import Params, factor_chain, flatten, output_kernel, unflatten
from trainables.linearise import (
    chain_linearisation,
    loss_fn,
    output_grad,
    output_hessian,
    output_hessian_vp,
)
from trainables.models import CNN, MLP


@dataclass
class SolveInfo:
    solver: str  # "exact" or "cg"
    damping: float  # the absolute λ used
    cg_iters: int = 0
    residual: float = 0.0  # ‖(G + λI)d − ∇L‖ / ‖∇L‖ (cg only)


@dataclass
class SolverMemory:
    """What `auto` learnt at earlier steps of one trial, so it need not probe every step.

    The probe (CG's gradient and first product, which give the Rayleigh quotient q that
    predicts CG's iteration count) is wasted work whenever exact then wins. q moves slowly
    along a trajectory, so a trial keeps the last one and probes again every REPROBE_EVERY
    steps. Deterministic and part of the trial's state: a restored trial chooses as an
    unbroken one does.
    """

    rayleigh: float | None = None  # q at the last probe
    since_probe: int = 0  # auto decisions since that probe

    REPROBE_EVERY = 50

    def fresh(self) -> float | None:
        """The remembered q while it is recent enough to decide with, else None."""
        return self.rayleigh if self.since_probe < self.REPROBE_EVERY else None

    def probed(self, rayleigh: float) -> None:
        """Remember a freshly measured q (a probe, or CG's own first product)."""
        self.rayleigh, self.since_probe = rayleigh, 0

    def state_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.rayleigh, self.since_probe = state["rayleigh"], state["since_probe"]


# ---- choosing the solver: a cost model --------------------------------------------------
@dataclass(frozen=True)
class DeviceRates:
    """Sustained rates of one kind of device, fitted by benchmarks/gn_solvers.py (--fit)."""

    mm_flops: float  # FLOP/s of matmuls in forward/backward passes
    conv_flops: float  # FLOP/s of convolutions in passes
    dense_flops: float  # FLOP/s of the kernel GEMMs and the n·c × n·c solve
    memory_bytes: float  # bytes/s written when J is materialised
    layer_s: float  # fixed seconds per layer per CG iteration (dispatch, Python)
    exact_s: float  # fixed seconds per exact solve


# CPU: fitted on 1-2 cores of an AMD EPYC (torch 2.14.1); CUDA: an untested H100-class guess,
# to be refitted with `benchmarks/gpu_check.sh` (gn_solvers --device cuda --fit).
DEVICE_RATES = {
    "cpu": DeviceRates(80e9, 35e9, 30e9, 3e9, 1.0e-4, 2.5e-3),
    "cuda": DeviceRates(20e12, 10e12, 5e12, 1e12, 6e-5, 5e-3),
}
MIN_CG_ITERS = 2  # CG iterations to cg_tol=1e-6 even at the largest damping
# iters ≈ MIN_CG_ITERS + a·(q/λ)^β at cg_tol=1e-6 (see predicted_cg_iterations): fitted on the
# digits MLP and CNN, cross-entropy and MSE, at init and after 300 SGD steps (gn_solvers.py).
# Convolutional spectra are dominated by fewer eigenvalues: CG needs ~3× fewer iterations.
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

    Empirical (CG_LAWS); within about 2× of the measured count on the benchmark grid, except
    where the count hits max_iter (CG then stops short of tol: exact is also the accurate choice).
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
    jacobian_s = (1 + 2 * c) * pass_s * (1 if chain is not None else 4)  # vmap: ≈ 4× slower
    exact_s = rates.exact_s + jacobian_s + j_bytes / rates.memory_bytes + dense / rates.dense_flops
    return SolverCosts(exact_s, iteration_s, j_bytes, law)


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
    FlopCounterMode itself imports torch._dynamo: 1.3 s in every fresh trial process."""
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


def gauss_newton_direction(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    damping: float,
    damping_mode: str = "absolute",
    solver: str = "auto",
    cg_tol: float = 1e-6,
    cg_max_iter: int = 500,
    exact_max_dim: int = 4096,
    memory: SolverMemory | None = None,
) -> tuple[Params, torch.Tensor, SolveInfo]:
    """The direction d (same structure as params), the batch loss, and how it was solved.

    `memory` (auto, absolute damping): decide with the Rayleigh quotient of a recent step
    instead of probing at this one (SolverMemory); without it auto probes when it must.
    """
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        out_BxC = functional_call(model, params, (x,))
    n, c = out_BxC.shape
    p = sum(t.numel() for t in params.values())
    g_BxC = output_grad(loss, out_BxC, y)
    value = loss_fn(loss, out_BxC, y)
    if not bool(torch.isfinite(out_BxC).all()):  # a diverged network: there is no system
        return _nan_like(params), value, SolveInfo("none", math.nan)
    size = out_BxC.element_size()
    kind = choose_solver(solver, n, c, p, exact_max_dim, size)
    probe = None
    if solver == "auto" and kind == "exact":  # it fits: which is faster?
        costs = solver_costs(model, params, x, c, loss)
        relative = damping_mode == "relative"
        ask = dict(costs=costs, cg_tol=cg_tol, cg_max_iter=cg_max_iter, relative=relative)
        kind = choose_solver(solver, n, c, p, exact_max_dim, size, **ask)
        remembered = memory.fresh() if memory is not None and not relative else None
        if kind == "probe" and remembered is not None:
            memory.since_probe += 1
            kind = choose_solver(solver, n, c, p, exact_max_dim, size, damping=damping,
                                 rayleigh=remembered, **ask)  # fmt: skip
        if kind == "probe":  # CG's gradient and first product, kept for CG if it goes on
            probe = _CGStart(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode)
            if memory is not None:
                memory.probed(probe.rayleigh)
            kind = choose_solver(solver, n, c, p, exact_max_dim, size, damping=probe.lam,
                                 rayleigh=probe.rayleigh, **ask)  # fmt: skip
    if kind == "exact":
        d_P, info = _exact(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode)
    else:
        if probe is None:
            probe = _CGStart(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode)
            if memory is not None and solver == "auto":  # CG's own first product: free
                memory.probed(probe.rayleigh)
        d_P, info = probe.solve(cg_tol, cg_max_iter)
    return unflatten(d_P, params), value, info


def _exact(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode):
    n, c = out_BxC.shape
    K_NCxNC, _, jt = output_kernel(model, params, x)
    HK = _block_hessian_times(loss, out_BxC, K_NCxNC)
    p = sum(t.numel() for t in params.values())
    lam = damping * (HK.diagonal().sum().item() / p) if damping_mode == "relative" else damping
    if not math.isfinite(lam):  # tr(G) overflowed: the step is as diverged as the network
        return flatten(_nan_like(params)), SolveInfo("exact", lam)
    g_NC = g_BxC.reshape(-1)
    if lam > 0:
        HK.diagonal().add_(lam)
        if loss == "mse":  # K/n + λI is symmetric positive definite: Cholesky, half LU's work
            coef_NC = torch.cholesky_solve(g_NC[:, None], torch.linalg.cholesky(HK))[:, 0]
        else:
            coef_NC = torch.linalg.solve(HK, g_NC)
    else:
        coef_NC = _min_norm_coefficients(K_NCxNC, output_hessian(loss, out_BxC), g_NC, n, c)
    return jt(coef_NC.view(n, c)), SolveInfo("exact", lam)


def _nan_like(params: Params) -> Params:
    return {name: torch.full_like(t, math.nan) for name, t in params.items()}


def _block_hessian_times(loss: str, out_BxC: torch.Tensor, M_NCxM: torch.Tensor) -> torch.Tensor:
    """H M for the block-diagonal output Hessian H, block by block: (nc)²·c FLOPs, not (nc)³."""
    n, c = out_BxC.shape
    V_BxCxM = M_NCxM.view(n, c, -1)
    if loss == "mse":
        return M_NCxM / n
    p_BxCx1 = out_BxC.softmax(1).unsqueeze(2)
    HV = p_BxCx1 * (V_BxCxM - (p_BxCx1 * V_BxCxM).sum(1, keepdim=True)) / n
    return HV.reshape(n * c, -1)


def _min_norm_coefficients(K, H, g, n, c):
    """λ → 0 limit: with S = H^½ (block-wise), d = JᵀS(SKS)⁺S⁺g = G⁺∇L."""
    blocks = torch.stack([H[i * c : (i + 1) * c, i * c : (i + 1) * c] for i in range(n)])
    ev, Q = torch.linalg.eigh(blocks)
    tol = ev.amax(1, keepdim=True).clamp_min(0) * c * torch.finfo(ev.dtype).eps * 10
    root = torch.where(ev > tol, ev.clamp_min(0).sqrt(), torch.zeros_like(ev))
    inv_root = torch.where(ev > tol, 1 / root.clamp_min(torch.finfo(ev.dtype).tiny), 0.0)
    S = torch.block_diag(*(Q @ torch.diag_embed(root) @ Q.transpose(1, 2)))
    S_pinv = torch.block_diag(*(Q @ torch.diag_embed(inv_root) @ Q.transpose(1, 2)))
    A = S @ K @ S
    A = (A + A.T) / 2
    return S @ torch.linalg.pinv(A, hermitian=True) @ (S_pinv @ g)


class _CGStart:
    """CG's setup on one forward pass: products, gradient b = Jᵀg, λ, and Jb, which gives
    q = bᵀGb/bᵀb = (Jb)ᵀH(Jb)/bᵀb (predicting the iteration count, choose_solver) and, with
    one more VJP, CG's first product Gb: nothing is computed twice if CG goes on."""

    def __init__(self, model, params, x, out_BxC, g_BxC, loss, damping, damping_mode):
        jvp_fn, vjp_fn = _products(model, params, x)

        def jt(u_BxC: torch.Tensor) -> torch.Tensor:
            return flatten(vjp_fn(u_BxC))

        def hj(v_P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            jv_BxC = jvp_fn(unflatten(v_P, params))
            return jv_BxC, output_hessian_vp(loss, out_BxC, jv_BxC)

        def ggn(v_P: torch.Tensor) -> torch.Tensor:
            return jt(hj(v_P)[1])

        self.ggn, self.jt = ggn, jt
        self.grad_P = jt(g_BxC)
        self.lam = damping
        if damping_mode == "relative":
            self.lam = damping * _hutchinson_mean_diag(ggn, self.grad_P)
        jb_BxC, self.hjb_BxC = hj(self.grad_P)
        bb = torch.dot(self.grad_P, self.grad_P)
        self.rayleigh = float((jb_BxC * self.hjb_BxC).sum() / bb) if bb > 0 else 0.0

    def solve(self, tol: float, max_iter: int) -> tuple[torch.Tensor, SolveInfo]:
        lam = self.lam
        first = self.jt(self.hjb_BxC) + lam * self.grad_P  # (G + λI)b: half of it already paid
        d_P, iters, rel = conjugate_gradient(
            lambda v: self.ggn(v) + lam * v, self.grad_P, tol, max_iter, first_Ap=first
        )
        return d_P, SolveInfo("cg", lam, iters, rel)


def _products(model: nn.Module, params: Params, x: torch.Tensor):
    """(δ ↦ Jδ, u ↦ Jᵀu) at params, reusing one forward pass for every product."""
    linearised = chain_linearisation(model, params, x)
    if linearised is not None:  # chains: the tangent pass alone over stored activations
        return linearised[1], linearised[2]

    def f(p: Params) -> torch.Tensor:
        return functional_call(model, p, (x,))

    _, vjp_fn = vjp(f, params)
    return (lambda delta: jvp(f, (params,), (delta,))[1]), (lambda u: vjp_fn(u)[0])


def _hutchinson_mean_diag(ggn, like_P: torch.Tensor, probes: int = 8) -> float:
    """mean diag(G) = tr(G)/P, estimated with Rademacher probes from a fixed seed."""
    g = torch.Generator(device="cpu").manual_seed(0)
    total = 0.0
    for _ in range(probes):
        z = (torch.randint(0, 2, like_P.shape, generator=g) * 2 - 1).to(like_P)
        total += torch.dot(z, ggn(z)).item()
    return total / probes / like_P.numel()


def conjugate_gradient(
    matvec, b: torch.Tensor, tol: float, max_iter: int, first_Ap: torch.Tensor | None = None
):
    """Solve A x = b for symmetric PSD A from x₀ = 0; stop at ‖r‖ ≤ tol·‖b‖.

    Returns (x, iterations, relative residual). From x₀ = 0 on a singular system with b in the
    range of A, CG converges to the minimum-norm solution. first_Ap: A b, if already computed.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = torch.dot(r, r)
    b_norm = b.norm().clamp_min(torch.finfo(b.dtype).tiny)
    it = 0
    while it < max_iter and rr.sqrt() > tol * b_norm:
        Ap = first_Ap if it == 0 and first_Ap is not None else matvec(p)
        alpha = rr / torch.dot(p, Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    return x, it, (rr.sqrt() / b_norm).item()
