"""Stability of the model being trained: its sharpness, lr·sharpness, and the gap at an update.

Gradient descent on a quadratic of curvature λ is stable only while lr·λ < 2. A linear model's
curvature is fixed at its linearisation point θ_s (the Gauss-Newton matrix G = JᵀHJ there), so a
phase whose θ_s lies in a sharp region diverges within the phase; a network can leave it
(the README, "Stability measures"). Three measures:

- :func:`sharpness`: λ_max(G) of the mean loss on a batch, matrix-free (Lanczos on G-vector
  products: one JVP, the output Hessian H, one VJP). For MSE, G at θ_s is the linear model's
  exact Hessian for the whole phase; for cross-entropy H moves with the outputs, so G at θ_s is
  the curvature at the phase's start.
- :func:`lr_sharpness`: lr·λ_max/(1 + momentum) for SGD, whose edge of stability is then 2;
  NaN for Adam and Gauss-Newton, whose steps are preconditioned (λ_max of G is not their edge).
- :func:`lin_gap`: at a feature update, the network's loss at θ minus the loss at θ of the linear
  model it replaces (linearised at the old θ_s): how far the linear model drifted from the net.

The trial loop measures them on :func:`stability_batch`, a fixed batch of training examples at
least as large as a training batch (a smaller one would overstate, on average, the curvature a
step sees).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from trainables.data import Data
from trainables.jacobian import Params, flatten, unflatten
from trainables.keys import PHASE_KEYS
from trainables.linearise import chain_linearisation, linearised_predict, loss_fn, output_hessian_vp

# Lanczos stops once the residual bound of its top Ritz value θ, |β·s_last|, is at most
# SHARPNESS_RTOL·θ: an eigenvalue of G then lies within that relative distance of θ (and the
# top Ritz value's own error is usually far smaller). SHARPNESS_MAX_ITER caps the G-vector
# products; at the cap the top Ritz value, a lower bound on λ_max, is returned.
SHARPNESS_RTOL = 1e-4
SHARPNESS_MAX_ITER = 100
SHARPNESS_SEED = 61_001  # the start vector's own generator: never the training RNG
STABILITY_PROBE_SEED = 50_000  # + the trial's seed: which training examples the probe holds


# ---- sharpness ---------------------------------------------------------------------------
def ggn_operator(
    model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, loss: str
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(f(x; θ), v ↦ G v) for G = JᵀHJ of the mean loss at θ, on flat parameter vectors.

    One forward pass serves every product: chains of known layers rerun only their tangent pass
    (linearise.chain_linearisation); any other model uses torch.func's jvp and vjp.
    """
    params = {name: p.detach() for name, p in params.items()}
    linearised = chain_linearisation(model, params, x, scalar_vjp=True)  # no sympy in trials
    if linearised is not None:
        out_BxC, jvp_fn, vjp_fn = linearised
    else:

        def f(p: Params) -> torch.Tensor:
            return functional_call(model, p, (x,))

        out_BxC, pullback = vjp(f, params)
        out_BxC = out_BxC.detach()

        def jvp_fn(delta: Params) -> torch.Tensor:
            return jvp(f, (params,), (delta,))[1]

        def vjp_fn(u_BxC: torch.Tensor) -> Params:
            return pullback(u_BxC)[0]

    def ggn(v_P: torch.Tensor) -> torch.Tensor:
        jv_BxC = jvp_fn(unflatten(v_P, params))
        return flatten(vjp_fn(output_hessian_vp(loss, out_BxC, jv_BxC))).detach()

    return out_BxC, ggn


def top_eigenvalue(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start_P: torch.Tensor,
    rtol: float = SHARPNESS_RTOL,
    max_iter: int = SHARPNESS_MAX_ITER,
) -> float:
    """λ_max of a symmetric PSD operator by Lanczos with full reorthogonalisation.

    Stops when the top Ritz value θ has residual bound ≤ rtol·θ, when the Krylov space is
    invariant (θ is then exact), or after max_iter products (θ is then a lower bound).
    NaN when a product is not finite.
    """
    steps = min(max_iter, start_P.numel())
    # the Lanczos vectors as rows, allocated once: rows not reached are never touched
    basis = torch.empty(steps, start_P.numel(), dtype=start_P.dtype, device=start_P.device)
    q = basis[0] = start_P / start_P.norm()
    alphas: list[float] = []
    betas: list[float] = []
    q_prev, beta = torch.zeros_like(q), 0.0
    top = math.nan
    for j in range(steps):
        w = matvec(q) - beta * q_prev
        alpha = float(torch.dot(w, q))
        if not math.isfinite(alpha):
            return math.nan
        alphas.append(alpha)
        Q = basis[: j + 1]
        for _ in range(2):  # twice is enough (Parlett's "twice is enough") in floating point
            w = w - Q.T @ (Q @ w)
        beta = float(w.norm())
        if not math.isfinite(beta):
            return math.nan
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        top = float(theta[-1])
        residual = abs(beta * float(S[-1, -1]))
        scale = float(theta.abs().max())
        if residual <= rtol * abs(top) or beta <= 1e3 * torch.finfo(w.dtype).eps * scale:
            return top
        betas.append(beta)
        if j + 1 == steps:
            break
        q_prev, q = q, w / beta
        basis[j + 1] = q
    return top


def sharpness(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    *,
    rtol: float = SHARPNESS_RTOL,
    max_iter: int = SHARPNESS_MAX_ITER,
) -> float:
    """λ_max of the Gauss-Newton matrix G = JᵀHJ of the mean `loss` on (x, y) at `params`.

    H is linearise.loss_fn's output Hessian: (diag(p) − ppᵀ)/n per example for cross-entropy,
    I/n for MSE (½‖f − onehot(y)‖² per example, mean over n). Neither depends on the labels, so
    `y` only has to match `x`. Lanczos (:func:`top_eigenvalue`) from a start vector of its own
    generator, seeded by SHARPNESS_SEED: the model, its parameters and every RNG of the trial are
    left as they were. Stops at SHARPNESS_RTOL (module constant, 1e-4: relative residual bound)
    or SHARPNESS_MAX_ITER products (100; then a lower bound). NaN when the outputs are not finite.
    """
    if len(y) != len(x):
        raise ValueError(f"sharpness: {len(x)} inputs but {len(y)} labels")
    with torch.enable_grad():
        out_BxC, ggn = ggn_operator(model, params, x, loss)
        if not bool(torch.isfinite(out_BxC).all()):
            return math.nan
        P = sum(p.numel() for p in params.values())
        start = _start_vector(P, out_BxC.dtype, out_BxC.device)
        return top_eigenvalue(ggn, start, rtol, max_iter)


@functools.lru_cache(maxsize=4)
def _start_vector(P: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Lanczos's start: a fixed random direction from SHARPNESS_SEED (the same at every
    measure of a trial, and never read from or written to any other generator)."""
    g = torch.Generator().manual_seed(SHARPNESS_SEED)
    return torch.randn(P, generator=g, dtype=torch.float64).to(device, dtype)


def lr_sharpness(
    sharpness: float, *, lr: float, optimizer: str, momentum: float, trainer: str
) -> float:
    """lr·λ_max/(1 + momentum): plain or linearised SGD (heavy ball) on a quadratic of curvature
    λ_max is stable while this is < 2. NaN for Adam and Gauss-Newton: their steps are
    preconditioned, so λ_max of G alone does not set their edge."""
    if trainer == "gauss_newton" or optimizer != "sgd":
        return math.nan
    return lr * sharpness / (1 + momentum)


# ---- the gap at a feature update ---------------------------------------------------------
@torch.no_grad()
def update_losses(
    model: nn.Module,
    theta: Mapping[str, torch.Tensor],
    theta_s: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
) -> tuple[float, float]:
    """(loss of the linear model linearised at θ_s, evaluated at θ; loss of the network at θ).

    At a feature update θ_s ← θ these are the loss just before and just after it.
    """
    theta = {name: p.detach() for name, p in theta.items()}
    delta = {name: theta[name] - theta_s[name] for name in theta_s}
    linear = linearised_predict(model, dict(theta_s), delta, x)
    network = linearised_predict(model, theta, None, x)
    return float(loss_fn(loss, linear, y)), float(loss_fn(loss, network, y))


def lin_gap(
    model: nn.Module,
    theta: Mapping[str, torch.Tensor],
    theta_s: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
) -> float:
    """The network's loss at θ minus that of the linear model linearised at θ_s, at θ."""
    before, after = update_losses(model, theta, theta_s, x, y, loss)
    return after - before


@torch.no_grad()
def network_loss(
    model: nn.Module, theta: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, loss: str
) -> float:
    """The network's mean loss at θ on (x, y)."""
    theta = {name: p.detach() for name, p in theta.items()}
    return float(loss_fn(loss, linearised_predict(model, theta, None, x), y))


# ---- the probe and the cadence ------------------------------------------------------------
def stability_batch(
    data: Data, probe_size: int, batch_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training examples the stability measures use: max(probe_size, batch_size) of
    them (all when batch_size=0 or when that is at least the training set), drawn once from the
    trial's seed by a generator of their own. At least a training batch: λ_max is convex, so
    a sample's top eigenvalue is biased upward the more the smaller the sample, and a probe
    smaller than a batch would overstate the curvature a training step sees."""
    n = len(data.y_train)
    size = max(probe_size, batch_size)
    if batch_size == 0 or size >= n:
        return data.x_train, data.y_train
    g = torch.Generator().manual_seed(STABILITY_PROBE_SEED + seed)
    idx = torch.randperm(n, generator=g)[:size].to(data.x_train.device)
    return data.x_train[idx], data.y_train[idx]


def measure_due(step: int, last_measured: int, interval: int) -> bool:
    """Whether a linearisation point made after `step` steps is measured: the first one in each
    window of `interval` steps. Points `interval` or more steps apart are thus all measured; K=1
    (a point every step) is measured every `interval` steps. last_measured < 0: none yet."""
    return last_measured < 0 or step // interval > last_measured // interval


# ---- what a trial keeps --------------------------------------------------------------------
@dataclass
class StabilityState:
    """A trial's stability measures between records (part of its state)."""

    sharpness: float = math.nan  # latest values (NaN before the first measure)
    lr_sharpness: float = math.nan
    lin_gap: float = math.nan
    lr_sharpness_max: float = math.nan  # largest lr_sharpness since the previous record
    last_step: int = -1  # the step of the latest measure (-1: none yet)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # not yet handed out

    def add(self, row: Mapping[str, Any]) -> None:
        """A new measure: the latest values, the running maximum, and its phase row."""
        self.sharpness, self.lr_sharpness = row["sharpness"], row["lr_sharpness"]
        self.lin_gap, self.last_step = row["lin_gap"], row["step"]
        value = row["lr_sharpness"]
        if not math.isnan(value) and not self.lr_sharpness_max >= value:  # NaN max: none yet
            self.lr_sharpness_max = value
        self.rows.append({key: row[key] for key in PHASE_KEYS})

    def record(self) -> dict[str, float]:
        """The record's stability keys; the running maximum starts again after it."""
        out = {
            "sharpness": self.sharpness,
            "lr_sharpness": self.lr_sharpness,
            "lr_sharpness_max": self.lr_sharpness_max,
            "lin_gap": self.lin_gap,
        }
        self.lr_sharpness_max = math.nan
        return out

    def take_rows(self) -> list[dict[str, Any]]:
        """The phase rows measured since the last call, oldest first."""
        rows, self.rows = self.rows, []
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rows": [dict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any] | None) -> StabilityState:
        """The state `to_dict` saved; a fresh one for states saved before stability measures."""
        if saved is None:
            return cls()
        return cls(**{**saved, "rows": [dict(r) for r in saved["rows"]]})
