"""Paper Fig. 8 on CPU: IL with each linear model solved to convergence, against K=∞, plain SGD
and plain Adam, each arm's lr tuned on validation, five seeds (digits MLP, T = 2000).

Arms (the IL arms use Adam, the optimiser that solves a linear model fastest):
- IL solved to convergence: `solve_to_convergence`, no cap on K. A phase ends when the smoothed
  batch loss has not fallen by 1% (or by 1e-3 nats, once it is below 0.1) for 50 steps. The
  first phase solves the linear model at θ₀ down to a small training loss, which takes a large
  part of T; later phases, started near a solution, end after about `convergence_patience`
  steps. So the arm makes one or two to a few tens of feature updates (`feature_updates` in
  its records): at the smallest lrs of its grid the first phase barely converges within T and
  the arm is nearly K = ∞, which the report shows rather than hides. A stricter test (the
  defaults) leaves it nearly K = ∞ at every lr; a much looser one makes it a fixed small K.
- K = ∞: the linear model at θ₀ for all T (Adam).
- plain SGD and plain Adam at K = 1: ordinary training, the paper's levels, as reference arms.

Each arm's lr grid (×3 steps) brackets its optimum on validation: the pick is interior in every
arm, the Adam grid reaching below plain Adam's pick and the SGD grid above plain SGD's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search_spaces.space import Space


def k1_levels(adam_lrs: Sequence[float], sgd_lrs: Sequence[float]) -> tuple[dict[str, Any], ...]:
    """The K = 1 levels as reference arms, once per seed and lr: plain Adam and plain SGD
    (plain training ignores k and the convergence keys). `paper_fig8` has the same arms."""
    return tuple(
        {"trainer": "plain", "optimizer": optimizer, "solve_to_convergence": False, "lr": lr}
        for optimizer, lrs in (("adam", adam_lrs), ("sgd", sgd_lrs))
        for lr in lrs
    )


ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # the IL arms and plain Adam
SGD_LRS = (3e-2, 0.1, 0.3, 1.0)  # plain SGD
SEEDS = [0, 1, 2, 3, 4]

SPACE = Space(
    name="fig8_cpu",
    description="Fig. 8 on digits: IL solved to convergence vs K=inf, SGD and Adam at K=1; "
    "lr per arm on val (Adam 1e-4..1e-2, SGD 0.03..1), 5 seeds",
    fixed={
        "dataset": "digits",
        "trainer": "linearised",
        "optimizer": "adam",
        "k": "inf",  # no cap: a converging arm's phases end on convergence alone
        "total_steps": 2000,
        "eval_every": 200,
        # the convergence test (docstring): several feature updates per trial, not one
        "convergence_patience": 50,
        "convergence_rtol": 1e-2,
        "convergence_atol": 1e-3,
    },
    grid={
        # True: IL solved to convergence; False: K = ∞ (the convergence keys then do nothing)
        "solve_to_convergence": [True, False],
        "lr": list(ADAM_LRS),
        "seed": SEEDS,
    },
    references=k1_levels(ADAM_LRS, SGD_LRS),
    metric="val_acc",
    smoke={
        "total_steps": 40,
        "eval_every": 20,
        "convergence_patience": 3,
        "solve_to_convergence": [True],
        "lr": [1e-3],
        "seed": [0],
    },
)
