"""Paper Fig. 9: damped Gauss-Newton on a small network, λ over nine orders of magnitude.

A small MLP on a 5,000-image CIFAR-10 subset, so the exact kernel-form solve fits at every λ.
The step η is swept with λ: at λ ≫ ‖G‖ a GN step is an SGD step of size η/λ, so one fixed η
would make the large-λ side under-trained rather than more feature-learning.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="paper_fig9",
    description="Paper Fig. 9: Gauss-Newton on a small MLP, CIFAR-10 subset, lambda 1e-6..1e3 x step",
    fixed={
        "dataset": "cifar10",
        "model": "mlp",
        "width": 64,
        "depth": 2,
        "trainer": "gauss_newton",
        "solver": "exact",
        "batch_size": 128,  # n·c = 1,280: the exact solve at every λ
        "n_train": 5000,
        "total_steps": 2000,
        "eval_every": 100,
        "val_size": 1000,
    },
    grid={
        "damping": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3],  # λ
        "lr": [0.1, 1.0, 10.0],  # η, swept jointly with λ (docstring)
        "seed": [0, 1, 2],
    },
    seconds_per_trial=120.0,  # an estimate for one modern GPU, not a measurement (README)
    smoke={
        "total_steps": 4,
        "eval_every": 2,
        "batch_size": 16,
        "n_train": 256,
        "n_test": 128,
        "val_size": 32,
        "damping": [1e-3, 1e2],
        "lr": [1.0],
        "seed": [0],
    },
)
