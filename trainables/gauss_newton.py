"""Damped Gauss-Newton directions d = (G + λI)⁻¹∇L with G = JᵀHJ, exact or matrix-free.

- exact (kernel form): d = Jᵀ(H·JJᵀ + λI)⁻¹g, an n·c × n·c solve, exact at any λ > 0.
  K = JJᵀ is built from per-layer factors for chains of Linear layers ((nc)²·d FLOPs a layer,
  J never exists; jacobian.output_kernel), else from J materialised once. H·K goes block by
  block; the solve is Cholesky for MSE (K/n + λI is SPD) and LU for cross-entropy.
  At λ = 0 it returns the limit G⁺∇L through the symmetric form S·JJᵀ·S with S = H^½.
- cg: conjugate gradient on G + λI; each GGN-vector product is one JVP, H, then one VJP, all on
  one forward pass (chains rerun only the tangent pass; linearise.chain_linearisation).
- auto: whichever the cost model in gn_cost.py predicts is faster.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from trainables.gn_cost import SolverCosts, choose_solver, solver_costs
from trainables.jacobian import Params, flatten, output_kernel, unflatten
from trainables.linearise import (
    chain_linearisation,
    loss_fn,
    output_grad,
    output_hessian,
    output_hessian_vp,
)


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


def gauss_newton_direction(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    damping: float,
    damping_mode: str = "absolute",
    solver: str = "auto",
    *,
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
    system = (model, params, x, out_BxC, g_BxC, loss, damping, damping_mode)  # both solvers'
    kind = choose_solver(solver, n, c, p, exact_max_dim, out_BxC.element_size())
    probe = None
    if solver == "auto" and kind == "exact":  # it fits: which is faster?
        kind, probe = _faster_solver(system, cg_tol, cg_max_iter, exact_max_dim, memory)
    if kind == "exact":
        d_P, info = _exact(*system)
    else:
        if probe is None:
            probe = _CGStart(*system)
            if memory is not None and solver == "auto":  # CG's own first product: free
                memory.probed(probe.rayleigh)
        d_P, info = probe.solve(cg_tol, cg_max_iter)
    return unflatten(d_P, params), value, info


def gn_step_size(lr: float, damping: float, lr_units: str = "absolute") -> float:
    """η in θ ← θ − η(G + λI)⁻¹∇L for the absolute λ of the step (SolveInfo.damping).

    absolute: η = lr. damped: η = lr·(1 + λ), so that the step tends to the full GN step lr·G⁺∇L
    as λ → 0 and to the SGD step lr·∇L as λ → ∞: the same lr is comparable at every λ.
    """
    if lr_units == "absolute":
        return lr
    if lr_units == "damped":
        return lr * (1.0 + damping)
    raise ValueError(f"lr_units={lr_units}: must be absolute or damped")


def _faster_solver(
    system: tuple, cg_tol: float, cg_max_iter: int, max_dim: int, memory: SolverMemory | None
) -> tuple[str, _CGStart | None]:
    """auto where both solvers fit: the cost model's pick (gn_cost.choose_solver), and CG's
    start if it had to be probed for the Rayleigh quotient (kept for CG if CG goes on)."""
    model, params, x, out_BxC, _, loss, damping, damping_mode = system
    n, c = out_BxC.shape
    p = sum(t.numel() for t in params.values())
    relative = damping_mode == "relative"
    costs: SolverCosts = solver_costs(model, params, x, c, loss)
    itemsize = out_BxC.element_size()
    ask = dict(costs=costs, cg_tol=cg_tol, cg_max_iter=cg_max_iter, relative=relative)

    def choose(**known: float) -> str:
        return choose_solver("auto", n, c, p, max_dim, itemsize, **ask, **known)

    kind = choose()
    remembered = memory.fresh() if memory is not None and not relative else None
    if kind == "probe" and remembered is not None:
        memory.since_probe += 1
        kind = choose(damping=damping, rayleigh=remembered)
    if kind != "probe":
        return kind, None
    probe = _CGStart(*system)  # CG's gradient and first product
    if memory is not None:
        memory.probed(probe.rayleigh)
    return choose(damping=probe.lam, rayleigh=probe.rayleigh), probe


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
