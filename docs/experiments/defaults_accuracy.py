"""Test accuracy at default settings per model x dataset x trainer (plain SGD, K=inf, K=100).

T=2000, seed 0, lr 0.05; the mnist5k CNN at 8 channels (cost). One JSON line per run.
Run from the repository root: PYTHONPATH=. python docs/experiments/defaults_accuracy.py
(about half an hour on 2 cores, most of it the CNN rows).
"""

from __future__ import annotations

import json
import time

import torch

from trainables import run

CASES = [("mlp", "digits", {}), ("mlp", "mnist5k", {}), ("mlp", "synthetic", {}),
         ("cnn", "digits", {}), ("cnn", "mnist5k", {"channels": 8})]  # fmt: skip
TRAINERS = [("plain SGD", dict(trainer="plain")), ("K=inf", dict(trainer="linearised", k="inf")),
            ("K=100", dict(trainer="linearised", k=100))]  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    for model, dataset, extra in CASES:
        for name, trainer in TRAINERS:
            cfg = {**trainer, "model": model, "dataset": dataset, "probe_size": 0,
                   "eval_every": 2000, **extra}  # fmt: skip
            t0 = time.time()
            r = list(run(cfg))[-1]
            keys = ("test_acc", "train_acc", "val_acc", "train_loss")
            print(json.dumps({"model": model, "dataset": dataset, "trainer": name, **extra,
                              **{k: round(r[k], 4) for k in keys}, "diverged": r["diverged"],
                              "wall_s": round(time.time() - t0, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
