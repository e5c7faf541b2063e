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

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

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


def choose_solver(solver: str, n: int, c: int, p: int, max_dim: int, itemsize: int = 4) -> str:
    """auto → exact while the n·c system and the n·c × P Jacobian fit, else cg."""
    if solver != "auto":
        return solver
    fits = n * c <= max_dim and n * c * p * itemsize <= 2**30
    return "exact" if fits else "cg"


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
) -> tuple[Params, torch.Tensor, SolveInfo]:
    """The direction d (same structure as params), the batch loss, and how it was solved."""
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        out_BxC = functional_call(model, params, (x,))
    n, c = out_BxC.shape
    p = sum(t.numel() for t in params.values())
    g_BxC = output_grad(loss, out_BxC, y)
    value = loss_fn(loss, out_BxC, y)
    kind = choose_solver(solver, n, c, p, exact_max_dim, out_BxC.element_size())
    if kind == "exact":
        d_P, info = _exact(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode)
    else:
        d_P, info = _cg(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode,
                        cg_tol, cg_max_iter)  # fmt: skip
    return unflatten(d_P, params), value, info


def _exact(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode):
    n, c = out_BxC.shape
    K_NCxNC, _, jt = output_kernel(model, params, x)
    HK = _block_hessian_times(loss, out_BxC, K_NCxNC)
    p = sum(t.numel() for t in params.values())
    lam = damping * (HK.diagonal().sum().item() / p) if damping_mode == "relative" else damping
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


def _cg(model, params, x, out_BxC, g_BxC, loss, damping, damping_mode, tol, max_iter):
    jvp_fn, vjp_fn = _products(model, params, x)

    def jt(u_BxC: torch.Tensor) -> torch.Tensor:
        return flatten(vjp_fn(u_BxC))

    def ggn(v_P: torch.Tensor) -> torch.Tensor:
        return jt(output_hessian_vp(loss, out_BxC, jvp_fn(unflatten(v_P, params))))

    grad_P = jt(g_BxC)
    lam = damping
    if damping_mode == "relative":
        lam = damping * _hutchinson_mean_diag(ggn, grad_P)
    d_P, iters, rel = conjugate_gradient(lambda v: ggn(v) + lam * v, grad_P, tol, max_iter)
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


def conjugate_gradient(matvec, b: torch.Tensor, tol: float, max_iter: int):
    """Solve A x = b for symmetric PSD A from x₀ = 0; stop at ‖r‖ ≤ tol·‖b‖.

    Returns (x, iterations, relative residual). From x₀ = 0 on a singular system with b in the
    range of A, CG converges to the minimum-norm solution.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = torch.dot(r, r)
    b_norm = b.norm().clamp_min(torch.finfo(b.dtype).tiny)
    it = 0
    while it < max_iter and rr.sqrt() > tol * b_norm:
        Ap = matvec(p)
        alpha = rr / torch.dot(p, Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    return x, it, (rr.sqrt() / b_norm).item()
