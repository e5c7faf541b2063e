"""k_sweep's curve with K placed adaptively (study.adaptive): dense where accuracy changes.

Same task as k_sweep (mnist5k MLP, linearised, SGD, T = 1000) at one pinned lr, which is not
tuned. The adaptive searcher places only (K, seed): `study.adaptive.check_space` refuses any
other swept key, and its planner fits one acc(N) curve to one trial per (N, seed), with no way
to reduce several lrs at one K to the best one. So lr cannot be a grid key beside the adaptive
K, and this space's curve is a fixed-lr curve, not the per-K tuned comparison of k_sweep. The
pinned lr is one at which every K trains (at larger lrs IL diverges at middle K, k_sweep's
docstring). The selection metric is validation accuracy, never test. The grid below is
k_sweep's shape at this lr, so `--searcher grid` runs the comparison study with the trial count
of the budget.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="k_adaptive",
    description="IL on mnist5k, lr 0.05: K placed adaptively in N until N50/N90 CIs are within x1.5",
    fixed={
        "dataset": "mnist5k",  # 5,000 real MNIST digits, shipped with a dependency
        "trainer": "linearised",
        "optimizer": "sgd",
        "lr": 0.05,
        "total_steps": 1000,  # T: N = ceil(T/K) - 1
        "eval_every": 100,  # steps between records
    },
    grid={
        # `--searcher grid`: k_sweep's K (N = 999, 30, 16, 7, 4, 3, 1, 0) x 5 seeds; the
        # adaptive searcher proposes its own K and seeds in their place
        "k": [1, 33, 62, 125, 200, 333, 500, "inf"],
        "seed": [0, 1, 2, 3, 4],
    },
    metric="val_acc",  # selection on validation, never on test
    searcher="adaptive",
    num_samples=40,  # the trial budget: the grid's count
    searcher_options={
        "seeds": 2,  # trials per proposed N before moving on (a revisit adds more)
        "initial_n": [1, 4, 16],  # the coarse log grid after the references K=1, K=∞
        "target_factor": 1.5,  # stop when the CIs of N50 and N90 are within hi/lo <= 1.5
        "n_boot": 200,  # bootstrap refits per decision
    },
    smoke={
        "total_steps": 40,
        "eval_every": 10,
        "k": [1, 8, "inf"],
        "seed": [0, 1],
        "dataset": "digits",
    },
)
