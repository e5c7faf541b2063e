"""Paper Fig. 9: damped Gauss-Newton on a small network, λ over nine orders of magnitude.

A small MLP on a 5,000-image CIFAR-10 subset, so the exact kernel-form solve fits at every λ.
At λ ≫ ‖G‖ a GN step is an SGD step of size η/λ, so the lr is in damped units (η = lr·(1 + λ),
`lr_units`), as in damping_sweep: one lr grid spans the full GN step at small λ and the SGD
learning rate at large λ, and the report picks lr per λ on validation accuracy. The grid is
damping_sweep's, measured to bracket every λ on digits; this space is GPU-sized and unmeasured,
so check each λ's pick is interior or stability-limited before reading the figure.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="paper_fig9",
    description="Paper Fig. 9: Gauss-Newton on a small MLP, CIFAR-10 subset, lambda 1e-6..1e3 x "
    "lr 3e-3..3 (damped units) x 3 seeds",
    fixed={
        "dataset": "cifar10",
        "model": "mlp",
        "width": 64,
        "depth": 2,
        "trainer": "gauss_newton",
        "lr_units": "damped",  # η = lr·(1 + λ) (docstring)
        "solver": "exact",
        "batch_size": 128,  # n·c = 1,280: the exact solve at every λ
        "n_train": 5000,
        "total_steps": 2000,
        "eval_every": 100,
        "val_size": 1000,
    },
    grid={
        "damping": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3],  # λ
        "lr": [3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0],  # damped units, tuned per λ
        "seed": [0, 1, 2],
    },
    metric="val_acc",
    seconds_per_trial=120.0,  # an estimate for one modern GPU, not a measurement (README)
    smoke={
        "total_steps": 4,
        "eval_every": 2,
        "batch_size": 16,
        "n_train": 256,
        "n_test": 128,
        "val_size": 32,
        "damping": [1e-3, 1e2],
        "lr": [0.1],
        "seed": [0],
    },
)
