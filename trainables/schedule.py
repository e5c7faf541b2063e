"""When the features move: the set of steps after which θ_s ← θ.

All schedules are one mechanism: :func:`move_steps` gives the steps t (1-based: "after t
optimiser steps") after which the linearisation point moves, θ_s ← θ_t, before step t+1 trains.
The initial linearisation at t=0 is not a move, and a move at t=T would train nothing, so it is
never made: the final predictor is always the last linear model that was trained.
``feature_updates`` in a record at step t counts the moves made before step t trained.

- uniform, k finite: t = k, 2k, 3k, … < T, so K=10 over T=60 steps makes 5 moves (⌈T/K⌉ − 1;
  N = T/K would count the last linear model's "update" at T). k=1 follows plain SGD's parameter
  trajectory exactly. k ≥ T is stored as k=∞: no moves, one fixed linearised model.
- geometric: gaps k, k·r, k·r², … (rounded, each ≥ 1): dense early, sparse late.
- one_shot: every step up to ``one_shot_at`` (plain training), then never (Fort et al.'s child).

``solve_to_convergence`` adds moves at run time (:class:`Schedule`); k then caps each phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainables.config import TrialConfig


@dataclass
class Phase:
    """The convergence test's view of the current phase (the steps since the last move)."""

    start: int = 0  # the step the phase began at
    best: float = math.inf  # the best smoothed batch loss so far (inf: none yet)
    ema: float = math.nan  # the batch loss's exponential moving average (nan: none yet)
    stale: int = 0  # steps since the EMA last improved on `best` by enough


class Schedule:
    """Whether θ_s moves after a step: a static schedule, or solve-to-convergence."""

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        self.is_move_step = is_move_step(cfg)
        self.converges = (
            cfg.solve_to_convergence and cfg.trainer == "linearised" and cfg.schedule != "one_shot"
        )

    def move_due(self, step: int, batch_loss: torch.Tensor, phase: Phase) -> bool:
        """After `step` steps, whose last had `batch_loss`: is a move due? Updates `phase`."""
        if not self.converges:
            return self.is_move_step(step)
        loss = float(batch_loss)  # the convergence test needs the value every step
        phase.ema = loss if math.isnan(phase.ema) else 0.9 * phase.ema + 0.1 * loss
        if not math.isfinite(phase.best):  # the phase's first step sets the reference
            phase.best, phase.stale = phase.ema, 0
        else:
            cfg = self.cfg
            needed = max(cfg.convergence_rtol * abs(phase.best), cfg.convergence_atol)
            if phase.ema < phase.best - needed:
                phase.best, phase.stale = phase.ema, 0
            else:
                phase.stale += 1
        # converged on the smoothed batch loss, or the phase has reached its cap k
        return phase.stale >= self.cfg.convergence_patience or step - phase.start >= self.cfg.k


def move_steps(cfg: TrialConfig) -> list[int]:
    """The sorted steps t ∈ [1, T) after which θ_s moves, for static schedules."""
    T = cfg.total_steps
    if cfg.trainer in ("plain", "gauss_newton"):
        return list(range(1, T))
    if cfg.schedule == "one_shot":
        return list(range(1, min(cfg.one_shot_at + 1, T)))
    if cfg.k == math.inf:
        return []
    k = int(cfg.k)
    if cfg.schedule == "uniform":
        return list(range(k, T, k))
    steps, t, gap = [], 0, float(k)
    while True:
        t += max(1, round(gap))
        if t >= T:
            return steps
        steps.append(t)
        gap *= cfg.growth


def is_move_step(cfg: TrialConfig) -> Callable[[int], bool]:
    """A constant-time membership test for :func:`move_steps` (t ↦ t ∈ move_steps(cfg)).

    It does not materialise T steps for plain, one-shot or uniform schedules, so a trial of
    any length costs O(1) memory and time per step; the geometric schedule has O(log T) moves
    and keeps them as a set.
    """
    T = cfg.total_steps
    if cfg.trainer in ("plain", "gauss_newton"):
        return lambda t: 1 <= t < T
    if cfg.schedule == "one_shot":
        last = min(cfg.one_shot_at, T - 1)
        return lambda t: 1 <= t <= last
    if cfg.k == math.inf:
        return lambda t: False
    if cfg.schedule == "uniform":
        k = int(cfg.k)
        return lambda t: 1 <= t < T and t % k == 0
    moves = frozenset(move_steps(cfg))
    return moves.__contains__
