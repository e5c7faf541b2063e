"""Measures of feature learning on a fixed probe batch, from the empirical NTK.

The kernel measured is the tangent kernel of the model being trained: for iterative
linearisation that is K(θ_s), the kernel at the current linearisation point (constant within a
phase, so K=∞ measures exactly 0 kernel change); for plain and Gauss-Newton training it is K(θ).

Kernels (n × n on the probe batch):
- ``trace``: Σ_c J_c J_cᵀ, the trace over outputs of the full n·c × n·c NTK; costs n·c VJPs.
- ``projected``: (vᵀJ)(vᵀJ)ᵀ for a fixed random unit output direction v; costs n VJPs.

For chains of Linear and Conv2d layers (MLP and CNN without norms) both come from one forward
and c (trace) or 1 (projected) backward passes (jacobian.py); Linear-only chains never form J.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import Data
from trainables.jacobian import (
    Params,
    chain_factors,
    factor_chain,
    jacobian,
    jacobian_from_factors,
    projected_jacobian,
    summed_kernel_from_factors,
)


def empirical_ntk(
    model: nn.Module, params: Params, x: torch.Tensor, kind: str, v_C: torch.Tensor
) -> torch.Tensor:
    """The n × n probe kernel of the given kind ("trace" or "projected")."""
    params = {k: v.detach() for k, v in params.items()}
    chain = factor_chain(model, params)
    if chain is not None:  # per-layer factors: one forward, c (trace) or 1 backward passes
        n, c = x.shape[0], v_C.shape[0]
        cotangents = None if kind == "trace" else v_C.expand(1, n, c)
        factors = chain_factors(chain, params, x, cotangents)
        if factors.all_linear:  # and for Linear layers no J at all
            return summed_kernel_from_factors(factors)
        J_NxKxP = jacobian_from_factors(factors, params)
        return torch.einsum("nkp,mkp->nm", J_NxKxP, J_NxKxP)
    if kind == "trace":
        J_NxCxP = jacobian(model, params, x)
        return torch.einsum("ncp,mcp->nm", J_NxCxP, J_NxCxP)
    J_NxP = projected_jacobian(model, params, x, v_C)
    return J_NxP @ J_NxP.T


def kernel_distance(K1: torch.Tensor, K2: torch.Tensor) -> float:
    """Fort et al. 2020: S = 1 − ⟨K₁,K₂⟩_F / (‖K₁‖_F ‖K₂‖_F)."""
    if K1 is K2 or torch.equal(K1, K2):
        return 0.0  # the same kernel: exactly no change, not a rounding error away from it
    K1, K2 = K1.double(), K2.double()
    cos = (K1 * K2).sum() / (K1.norm() * K2.norm())
    return float(1 - cos)


def centred_alignment(K: torch.Tensor, Y_NxC: torch.Tensor) -> float:
    """Centred kernel–target alignment ⟨HKH, HYYᵀH⟩_F / (‖HKH‖_F ‖HYYᵀH‖_F), H = I − 11ᵀ/n."""
    K, Y_NxC = K.double(), Y_NxC.double()
    Kc = K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
    Yc = Y_NxC - Y_NxC.mean(0, keepdim=True)  # HY, so HYYᵀH = Yc Ycᵀ
    T = Yc @ Yc.T
    return float((Kc * T).sum() / (Kc.norm() * T.norm()))


def relative_change(a: Params, b: Params) -> float:
    """‖a − b‖ / ‖b‖ over all parameters."""
    num = sum(float((a[k].detach() - b[k].detach()).pow(2).sum()) for k in b)
    den = sum(float(t.detach().pow(2).sum()) for t in b.values())
    return (num / den) ** 0.5 if den > 0 else float("nan")


def probe_targets(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot targets of the probe's labels."""
    return F.one_hot(y, num_classes).to(dtype)


# ---- the probe and the kernels it compares ----------------------------------------------
@dataclass
class KernelCache:
    """The kernels a trial's measures compare, kept between records (part of its state)."""

    K0: torch.Tensor | None = None  # the first measured kernel
    prev: torch.Tensor | None = None  # the kernel at the previous measure
    prev_step: int = 0  # the step of that measure
    # (key, K): the last kernel computed, reused while the key names the same parameters
    cache: tuple[int, torch.Tensor] | None = None


@dataclass(frozen=True)
class Probe:
    """A fixed batch of training examples and output direction, the same at every measure."""

    x: torch.Tensor  # the probe's inputs
    Y_NxC: torch.Tensor  # their one-hot targets
    v_C: torch.Tensor  # the unit output direction of the projected kernel
    ntk: str  # "trace" or "projected"

    @classmethod
    def sample(cls, data: Data, size: int, seed: int, ntk: str) -> Probe:
        """`size` training examples and a random v, both from the trial's seed alone."""
        g = torch.Generator().manual_seed(40_000 + seed)
        device, dtype = data.x_train.device, data.x_train.dtype
        idx = torch.randperm(len(data.y_train), generator=g)[:size].to(device)
        Y_NxC = probe_targets(data.y_train[idx], data.num_classes, dtype)
        v_C = torch.randn(data.num_classes, generator=g, dtype=torch.float64)
        return cls(data.x_train[idx], Y_NxC, (v_C / v_C.norm()).to(device, dtype), ntk)

    def kernel_measures(
        self, model: nn.Module, params: Params, key: int, step: int, kernels: KernelCache
    ) -> dict[str, float]:
        """The kernel measures of K(params) at `step`, against `kernels` (updated).

        `key` names `params`: K is computed again only when the key changes.
        """
        if kernels.cache is None or kernels.cache[0] != key:
            kernels.cache = (key, empirical_ntk(model, params, self.x, self.ntk, self.v_C))
        K = kernels.cache[1]
        if kernels.K0 is None:
            kernels.K0, kernels.prev, kernels.prev_step = K, K, step
        dist_prev = kernel_distance(kernels.prev, K)
        dt = step - kernels.prev_step
        out = {
            "kernel_distance_init": kernel_distance(kernels.K0, K),
            "kernel_distance_prev": dist_prev,
            "kernel_velocity": dist_prev / dt if dt else 0.0,
            "kernel_alignment": centred_alignment(K, self.Y_NxC),
        }
        kernels.prev, kernels.prev_step = K, step
        return out
