"""Paper Fig. 8: IL with each linear model solved to convergence, against K=∞, plain SGD and
plain Adam, each arm's lr tuned on validation, five seeds: CIFAR-10 CNN, GPU-sized.

The same arms, seeds and lr-grid structure as `fig8_cpu` (its docstring describes the arms and
the convergence test), at the paper's scale. The lr grids (×3 steps) are centred on the paper's
lr 1e-3 and reach a decade either way for Adam, and from 1e-3 to 0.1 for SGD; they are not
measured on this task (no GPU here), so check each arm's pick is interior or stability-limited
before reading the figure, and widen a grid whose pick lies at its edge.
"""

from __future__ import annotations

from search_spaces.fig8_cpu import k1_levels
from search_spaces.space import Space

ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3)  # the IL arms and plain Adam
SGD_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1)  # plain SGD
SEEDS = [0, 1, 2, 3, 4]

SPACE = Space(
    name="paper_fig8",
    description="Paper Fig. 8: IL solved to convergence vs K=inf, SGD and Adam at K=1, "
    "lr per arm on val, 5 seeds, CIFAR-10",
    fixed={
        "dataset": "cifar10",
        "model": "cnn",
        "trainer": "linearised",
        "optimizer": "adam",
        "batch_size": 128,
        "total_steps": 200_000,
        "eval_every": 2_000,
        "k": "inf",  # no cap: a converging arm's phases end on convergence alone
        "convergence_patience": 500,  # steps without improvement that end a phase
        "convergence_rtol": 1e-2,
        "convergence_atol": 1e-3,
        "val_size": 5000,
    },
    grid={
        # True: IL solved to convergence; False: K = ∞
        "solve_to_convergence": [True, False],
        "lr": list(ADAM_LRS),
        "seed": SEEDS,
    },
    references=k1_levels(ADAM_LRS, SGD_LRS),  # the K = 1 levels, once per seed
    metric="val_acc",
    seconds_per_trial=600.0,  # an estimate for one modern GPU, not a measurement (README)
    smoke={
        "total_steps": 20,
        "eval_every": 10,
        "convergence_patience": 3,
        "solve_to_convergence": [True],
        "lr": [1e-3],
        "seed": [0],
        "n_train": 256,
        "n_test": 128,
        "val_size": 64,
    },
)
