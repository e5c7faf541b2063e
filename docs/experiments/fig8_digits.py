"""The paper's Fig. 8 on digits: Adam solving each linear model to convergence, against SGD
K=1, Adam K=1 and Adam K=inf, 3 seeds, T=2000. One JSON line per arm (mean, sd over seeds).

Run from the repository root: PYTHONPATH=. python docs/experiments/fig8_digits.py
"""

from __future__ import annotations

import json
import statistics

import torch

from trainables import run

ARMS = {
    "IL, Adam, each linear model solved to convergence (K cap = inf)": dict(
        trainer="linearised", optimizer="adam", lr=1e-3, k="inf", solve_to_convergence=True
    ),
    "plain SGD (K=1), lr 0.05": dict(trainer="plain", optimizer="sgd", lr=0.05),
    "plain Adam (K=1), lr 1e-3": dict(trainer="plain", optimizer="adam", lr=1e-3),
    "IL, Adam, K=inf (one linear model)": dict(
        trainer="linearised", optimizer="adam", lr=1e-3, k="inf"
    ),
}


def summary(records: list[dict], key: str) -> tuple[float, float]:
    values = [r[key] for r in records]
    return round(statistics.mean(values), 4), round(statistics.stdev(values), 4)


def main() -> None:
    torch.set_num_threads(1)
    for name, cfg in ARMS.items():
        finals = [
            list(run({**cfg, "seed": seed, "probe_size": 0, "eval_every": 500}))[-1]
            for seed in range(3)
        ]
        print(json.dumps({
            "arm": name,
            **{key: summary(finals, key) for key in ("test_acc", "train_acc", "train_loss")},
            "feature_updates": [r["feature_updates"] for r in finals],
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
