"""Paper Fig. 8: each linear model solved to convergence, against SGD and Adam at K = 1.

Every arm trains the same CNN on CIFAR-10 for the same T. The IL arms relinearise only when
the smoothed batch loss of the current linear model has stopped improving (k caps nothing);
the plain arms are ordinary training, the references the paper draws as levels.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="paper_fig8",
    description="Paper Fig. 8: IL solved to convergence (SGD, Adam) vs plain SGD and Adam, CIFAR-10",
    fixed={
        "dataset": "cifar10",
        "model": "cnn",
        "lr": 1e-3,  # the paper's, for SGD and Adam alike
        "batch_size": 128,
        "total_steps": 200_000,
        "eval_every": 2_000,
        "k": "inf",  # no cap: phases end on convergence alone
        "solve_to_convergence": True,  # plain training ignores it (the effective config)
        "convergence_patience": 500,  # steps without improvement that end a phase
        "val_size": 5000,
    },
    grid={
        "trainer": ["linearised", "plain"],
        "optimizer": ["sgd", "adam"],
        "seed": [0, 1, 2],
    },
    seconds_per_trial=600.0,  # an estimate for one modern GPU, not a measurement (README)
    smoke={
        "total_steps": 20,
        "eval_every": 10,
        "seed": [0],
        "convergence_patience": 3,
        "n_train": 256,
        "n_test": 128,
        "val_size": 64,
    },
)
