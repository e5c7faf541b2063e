"""The paper's main figure: test accuracy against N, the number of feature updates.

Fair by construction (the README's conventions): the learning rate is tuned per K on the
validation split (1,000 digits; the report picks it and classes the pick against the grid),
every arm runs the same T, five seeds, and mnist5k's 1,000 test digits make one example 0.1
points. K is dense where the curve changes, N from 1 to about 30, with K=1 and K=∞ as levels
and plain Adam, the usual baseline, as a reference arm of the same study and figure, tuned on
its own grid.

The lr grid is geometric (×2) and wide enough that every K's pick is bracketed: interior, or
stability-limited where the next larger lr diverges at that K. IL at intermediate K diverges at
learning rates where K = 1 and K = ∞ train, so no single range suits every K; the grid is not
narrowed to the values every K can use (that caps the K that could use more), and the
divergences are part of the result (the report's stability map and figure).
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="k_sweep",
    description="IL on mnist5k: K from 1 to inf (N = 1..30) x lr 0.025..0.8 (x2) tuned on val "
    "x 5 seeds, plain Adam (lr 1e-3..1e-2) as reference",
    fixed={
        "dataset": "mnist5k",  # 5,000 real MNIST digits, shipped with a dependency
        "trainer": "linearised",
        "optimizer": "sgd",
        "total_steps": 1000,  # T: optimiser steps per trial, enough for K=∞ to fit its data
        "eval_every": 100,  # steps between records
    },
    grid={
        # steps between feature updates; inf = never. N = ⌈T/K⌉ − 1 = 30, 16, 7, 4, 3, 1 for the
        # finite K > 1: dense where accuracy moves, between N = 0 and N ≈ 10.
        "k": [1, 33, 62, 125, 200, 333, 500, "inf"],
        # tuned per K on validation accuracy by the report; ×2 steps from below every K's pick
        # to past the largest rate any K trains at, so each pick is bracketed (module docstring)
        "lr": [0.025, 0.05, 0.1, 0.2, 0.4, 0.8],
        "seed": [0, 1, 2, 3, 4],
    },
    # plain Adam at K = 1 (ordinary training), once per seed and lr: the baseline drawn as a
    # level, its lr tuned on validation by the same rule over its own grid (×3 steps)
    references=tuple(
        {"trainer": "plain", "optimizer": "adam", "lr": lr, "k": 1} for lr in (0.001, 0.003, 0.01)
    ),
    metric="val_acc",
    smoke={
        "total_steps": 40,
        "eval_every": 10,
        "k": [1, "inf"],
        "lr": [0.05],
        "seed": [0],
        "dataset": "digits",
    },
)
