"""The paper's main figure: test accuracy against K, the steps between feature updates."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="k_sweep",
    description="IL test accuracy vs K in {1,10,100,250,500,1000,inf} x 3 seeds at T=2000 (main figure)",
    fixed={
        "trainer": "linearised",
        "optimizer": "sgd",
        "total_steps": 2000,  # T: optimiser steps per trial
        "eval_every": 100,  # steps between records
    },
    grid={
        # steps between feature updates; inf = never. On digits the curve rises between
        # N = 0 and N ≈ 20 feature updates (K = inf … 100), so K is dense there.
        "k": [1, 10, 100, 250, 500, 1000, "inf"],
        "seed": [0, 1, 2],
    },
    seconds_per_trial=2.7,  # measured: mean trial wall_s, 2 at once on 2 cores
    smoke={"total_steps": 40, "eval_every": 10, "k": [1, "inf"], "seed": [0]},
)
