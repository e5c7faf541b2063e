"""The paper's main experiment: a CNN on CIFAR-10 with SGD at lr 1e-3, K from 1 to 10⁶ and ∞.

Needs CIFAR-10 under data_dir (torchvision's files) and, at this T, GPUs: see the README's
table of spaces for the trial count and an estimated cost per trial.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="paper_cifar10",
    description="Paper Fig. 2: CNN on CIFAR-10, SGD lr 1e-3, K in 1..1e6 and inf, T=2e6, 3 seeds",
    fixed={
        "dataset": "cifar10",
        "model": "cnn",  # 32 channels: the paper's ~250k parameters
        "trainer": "linearised",
        "optimizer": "sgd",
        "lr": 1e-3,  # the paper's learning rate
        "batch_size": 128,
        "total_steps": 2_000_000,  # T > 10⁶ so that K = 10⁶ is one feature update, not ∞
        "eval_every": 20_000,  # steps between records: 100 records per trial
        "measure_every": 100_000,  # the probe kernel every 5% of training
        "val_size": 5000,  # held out of the 50,000 training images for model selection
    },
    grid={
        "k": [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, "inf"],
        "seed": [0, 1, 2],
    },
    seconds_per_trial=3600.0,  # an estimate for one modern GPU, not a measurement (README)
    smoke={
        "total_steps": 20,
        "eval_every": 10,
        "k": [1, "inf"],
        "seed": [0],
        "n_train": 256,
        "n_test": 128,
        "val_size": 64,
        "measure_every": 0,
    },
)
