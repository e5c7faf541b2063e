"""The paper's main figure: test accuracy against N, the number of feature updates.

Fair by construction (the README's conventions): the learning rate is tuned per K on the
validation split (the report picks it, ties toward the smaller), every arm runs the same T and
fits its training data, five seeds, and mnist5k's 1,000 test digits make one example 0.1 points.
K is dense where the curve changes, N from 1 to about 30, with K=1 and K=∞ as levels and plain
Adam, the usual baseline, as a reference arm of the same study and figure.

The lr grid is where every K is stable. At a larger lr, IL diverges at some middle K while K = 1
and K = ∞ do not (the linear model of a phase cannot leave a sharp region the way SGD does; the
README's main-figure section has the run), so a grid that included it would compare some K at a
learning rate the others cannot use; the `lr_sweep` space shows that instability on its own.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="k_sweep",
    description="IL on mnist5k: K from 1 to inf (N = 1..30) x lr {0.03, 0.05} tuned on val "
    "x 5 seeds, plain Adam as reference",
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
        "lr": [0.03, 0.05],  # tuned per K on validation accuracy by the report
        "seed": [0, 1, 2, 3, 4],
    },
    # plain Adam at K = 1 (ordinary training), once per seed: the baseline drawn as a level
    references=({"trainer": "plain", "optimizer": "adam", "lr": 0.001, "k": 1},),
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
