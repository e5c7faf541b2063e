"""One training step per trainer: each moves θ on a batch (x, y) and returns the batch loss.

- :class:`PlainStep`: ordinary autograd on the network f(x; θ), the SGD/Adam baseline.
- :class:`LinearisedStep`: the optimiser on f_lin(x; θ) = f(x; θ_s) + J(θ_s)(θ − θ_s).
- :class:`GaussNewtonStep`: θ ← θ − lr·(G + λI)⁻¹∇L on the network (gauss_newton.py).

Each also says what a feature update (θ_s ← θ) does for it, and what the trained model predicts.
The steps read and write the trial's :class:`~trainables.state.TrialState`.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import TrialConfig
from trainables.gauss_newton import gauss_newton_direction, gn_step_size
from trainables.jacobian import Params
from trainables.linearise import linearised_grad, linearised_predict, loss_fn
from trainables.measures import relative_change
from trainables.optim import SGD, Adam, Optimizer
from trainables.state import TrialState


class _Step:
    """What every step holds: the config, the model, and the trial's state it trains."""

    cg_iters = 0  # CG iterations of the last step

    def __init__(self, cfg: TrialConfig, model: nn.Module, state: TrialState):
        self.cfg, self.model, self.state = cfg, model, state


class _NetworkStep(_Step):
    """Plain and Gauss-Newton train the network itself: θ_s is θ at every step."""

    def move(self) -> None:
        """A feature update: nothing to copy, θ_s is θ."""
        self.state.theta_s = self.state.theta

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f(x; θ)."""
        return linearised_predict(self.model, self.state.theta, None, x)


class PlainStep(_NetworkStep):
    """One optimiser step on the network's own loss."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer = self.state.optimizer
        optimizer.zero_grad()
        loss = loss_fn(self.cfg.loss, self.model(x), y)
        loss.backward()
        optimizer.step()
        self.state.at_lin_point = False
        return loss.detach()


class GaussNewtonStep(_NetworkStep):
    """θ ← θ − η·d with the damped Gauss-Newton direction d = (G + λI)⁻¹∇L on the batch; η is
    lr, or lr·(1 + λ) in damped units (`gn_step_size`)."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg, theta = self.cfg, self.state.theta
        direction, loss, info = gauss_newton_direction(
            self.model, theta, x, y, cfg.loss, cfg.damping,
            damping_mode=cfg.damping_mode, solver=cfg.solver,
            cg_tol=cfg.cg_tol, cg_max_iter=cfg.cg_max_iter, exact_max_dim=cfg.exact_max_dim,
            memory=self.state.solver_memory,
        )  # fmt: skip
        eta = gn_step_size(cfg.lr, info.damping, cfg.lr_units)
        with torch.no_grad():
            for name, p in theta.items():
                p.sub_(eta * direction[name])
        self.cg_iters = info.cg_iters
        return loss


class LinearisedStep(_Step):
    """One optimiser step on the model linearised at θ_s: iterative linearisation."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.state
        s.optimizer.zero_grad()
        grads, loss, _ = linearised_grad(self.model, s.theta_s, self._delta(), x, y, self.cfg.loss)
        for p, g in zip(s.theta.values(), grads, strict=True):
            p.grad = g
        s.optimizer.step()
        s.at_lin_point = False
        return loss.detach()

    def move(self) -> None:
        """A feature update: θ_s ← θ, and how far θ_s moved."""
        s = self.state
        s.lin_point_change = relative_change(s.theta, s.theta_s)
        with torch.no_grad():
            for name, p in s.theta.items():
                s.theta_s[name].copy_(p)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """f_lin(x; θ, θ_s)."""
        return linearised_predict(self.model, self.state.theta_s, self._delta(), x)

    def _delta(self) -> Params | None:
        """θ − θ_s, or None at the linearisation point (the tangent pass is then skipped)."""
        s = self.state
        return None if s.at_lin_point else param_delta(s.theta, s.theta_s)


STEPS = {"plain": PlainStep, "linearised": LinearisedStep, "gauss_newton": GaussNewtonStep}
Step = PlainStep | LinearisedStep | GaussNewtonStep


def make_optimizer(cfg: TrialConfig, theta: Params) -> Optimizer:
    """The inner optimiser of plain and linearised training (Gauss-Newton sets its own step)."""
    # torch.optim's arithmetic without its classes, whose first use imports torch._dynamo
    params = list(theta.values())
    if cfg.optimizer == "adam":
        return Adam(params, lr=cfg.lr)
    return SGD(params, lr=cfg.lr, momentum=cfg.momentum)


def param_delta(theta: Params, theta_s: Params) -> dict[str, torch.Tensor]:
    """θ − θ_s, detached."""
    return {name: theta[name].detach() - theta_s[name] for name in theta_s}
