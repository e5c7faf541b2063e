"""Learning rate over four orders of magnitude for plain SGD and IL (K=100), on validation.

The grid is roughly geometric (×3) and brackets both arms: plain SGD's pick is interior, with a
larger lr that still trains but scores lower (and larger ones that collapse or diverge); IL's
pick is stability-limited, the next lr of the grid diverging. Three seeds, so that a divergence
edge is not one seed's luck. The report ranks lr per trainer on validation accuracy.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="lr_sweep",
    description="lr 1e-3..10 (x3 steps) x 3 seeds for plain SGD and IL (K=100): where does each diverge?",
    fixed={
        "optimizer": "sgd",
        "k": 100,  # used by the linearised trainer only
        "total_steps": 1000,
        "eval_every": 100,
    },
    grid={
        "trainer": ["plain", "linearised"],
        "lr": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0],
        "seed": [0, 1, 2],
    },
    metric="val_acc",
    smoke={
        "total_steps": 20,
        "eval_every": 10,
        "lr": [1e-2, 1.0],
        "trainer": ["linearised"],
        "seed": [0],
    },
)
