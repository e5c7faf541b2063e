"""Optuna over the learning rate (log-uniform) and K (choice) for IL, ranked on validation.

The lr range spans the stable optimum of every K in the choice and, for the middle K, the lr at
which IL diverges: the optimum sits well inside it (at least half a decade from either end), so
the searcher can find it from both sides rather than pile up at an edge. Measured by an lr grid
per K before fixing the range (README, "Search spaces").
"""

from __future__ import annotations

from search_spaces.space import Choice, LogUniform, Space

SPACE = Space(
    name="optuna_lr_k",
    description="Optuna (TPE) over lr log-uniform in [1e-3, 3] and K in {1..inf} for IL",
    fixed={
        "trainer": "linearised",
        "optimizer": "sgd",
        "total_steps": 1000,
        "eval_every": 100,
        "seed": 0,
    },
    distributions={
        "lr": LogUniform(1e-3, 3.0),
        "k": Choice((1, 10, 100, 500, "inf")),  # K >= T would be a second ∞
    },
    metric="val_acc",  # what Optuna optimises: selection on validation, never on test
    searcher="optuna",
    num_samples=20,  # trials the searcher proposes
    smoke={"total_steps": 20, "eval_every": 10, "k": [1, 4, "inf"]},
)
