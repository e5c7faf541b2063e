"""Learning rate across four orders of magnitude, for plain training and IL."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="lr_sweep",
    description="lr in {1e-4..1} for plain SGD and IL (K=100): where does each diverge?",
    fixed={
        "optimizer": "sgd",
        "k": 100,  # used by the linearised trainer only
        "total_steps": 1000,
        "eval_every": 100,
        "seed": 0,
    },
    grid={
        "trainer": ["plain", "linearised"],
        "lr": [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
    },
    smoke={"total_steps": 20, "eval_every": 10, "lr": [1e-2, 1.0], "trainer": ["linearised"]},
)
