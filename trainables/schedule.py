"""When the features move: the set of steps after which θ_s ← θ.

All schedules are one mechanism: :func:`move_steps` gives the steps t (1-based: "after t
optimiser steps") at which the linearisation point moves. The initial linearisation at t=0 is
not a move. ``feature_updates`` after t steps is the number of moves at steps ≤ t.

- uniform, k finite: t = k, 2k, 3k, … ≤ T. With k | T the final predictor is the network at θ_T
  and feature_updates ends at exactly N = T/k (the paper's proxy); k=1 is plain SGD, record for
  record. k ≥ T is stored as k=∞: no moves, one fixed linearised model.
- geometric: gaps k, k·r, k·r², … (rounded, each ≥ 1): dense early, sparse late.
- one_shot: every step up to ``one_shot_at`` (plain training), then never (Fort et al.'s child).

``solve_to_convergence`` adds moves at run time (see loop.py); k then caps each phase.
"""

from __future__ import annotations

import math

from trainables.config import TrialConfig


def move_steps(cfg: TrialConfig) -> list[int]:
    """The sorted steps t ∈ [1, T] after which θ_s moves, for static schedules."""
    T = cfg.total_steps
    if cfg.trainer in ("plain", "gauss_newton"):
        return list(range(1, T + 1))
    if cfg.schedule == "one_shot":
        return list(range(1, min(cfg.one_shot_at, T) + 1))
    if cfg.k == math.inf:
        return []
    k = int(cfg.k)
    if cfg.schedule == "uniform":
        return list(range(k, T + 1, k))
    steps, t, gap = [], 0, float(k)
    while True:
        t += max(1, round(gap))
        if t > T:
            return steps
        steps.append(t)
        gap *= cfg.growth
