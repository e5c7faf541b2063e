"""Damped Gauss-Newton with the damping λ over nine orders of magnitude, the step tuned per λ.

At λ ≫ ‖G‖ a GN step is an SGD step of size η/λ, so one absolute η grid cannot bracket every λ.
The lr is therefore in damped units (`lr_units="damped"`, η = lr·(1 + λ)): the full GN step
size at small λ, the SGD learning rate at large λ. One lr grid (×3 steps) then brackets every λ:
each λ's pick on validation accuracy is interior, or stability-limited where the next lr of the
grid diverges (the small-λ side, where a near-full GN step on a minibatch is unstable well below
lr 1). Three seeds per cell; the report picks lr per λ.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="damping_sweep",
    description="Gauss-Newton: damping 1e-6..1e3 x lr 3e-3..3 (damped units) x 3 seeds, "
    "tuned per damping on val",
    fixed={
        "trainer": "gauss_newton",
        "lr_units": "damped",  # η = lr·(1 + λ): one lr grid brackets every λ (docstring)
        "batch_size": 64,  # n·c = 640 outputs per exact kernel-form solve
        "total_steps": 200,
        "eval_every": 20,
    },
    grid={
        "damping": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3],  # λ
        "lr": [3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0],
        "seed": [0, 1, 2],
    },
    metric="val_acc",
    smoke={
        "total_steps": 4,
        "eval_every": 2,
        "batch_size": 16,
        "damping": [1e-3, 1e2],
        "lr": [0.1],
        "seed": [0],
    },
)
