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

``solve_to_convergence`` adds moves at run time (see loop.py); k then caps each phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from trainables.config import TrialConfig


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
