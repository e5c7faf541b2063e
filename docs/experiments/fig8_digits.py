"""The paper's Fig. 8 on digits is the built-in space `fig8_cpu` (search_spaces/fig8_cpu.py):
run it as a study, `python -m study.run --space fig8_cpu`, and read the report.

This script runs the same trials in-process, without Ray, two at a time, and prints one JSON line
per arm and lr (means over seeds) with the arm's pick on validation accuracy: the pick is the lr
with the best mean among those where no seed diverged (ties toward the smaller), and its label
says whether the grid bracketed it (interior, or stability-limited when the next lr diverged).

Run from the repository root: PYTHONPATH=. python docs/experiments/fig8_digits.py
"""

from __future__ import annotations

import json
import statistics
from multiprocessing import Pool

import search_spaces
from study.plan import _combinations, build_plan
from study.spec import StudySpec

ARM_KEYS = ("trainer", "optimizer", "solve_to_convergence")


def _final(config: dict) -> dict:
    import torch

    from trainables import run

    torch.set_num_threads(1)
    records = list(run({**config, "probe_size": 0}))
    return {**records[-1], "diverged": any(r["diverged"] for r in records)}


def _label(lrs: list[float], usable: set[float], pick: float) -> str:
    i = lrs.index(pick)
    if i == len(lrs) - 1:
        return "edge-high"
    if lrs[i + 1] not in usable:
        return "stability-limited"
    return "edge-low" if i == 0 else "interior"


def main() -> None:
    space = search_spaces.get("fig8_cpu")
    configs = list(_combinations(build_plan(StudySpec(space=space.name)).space))
    with Pool(2) as pool:
        finals = pool.map(_final, configs, chunksize=1)
    arms: dict[tuple, dict[float, list[dict]]] = {}
    for config, final in zip(configs, finals, strict=True):
        arm = tuple(config.get(k) for k in ARM_KEYS)
        arms.setdefault(arm, {}).setdefault(config["lr"], []).append(final)
    for arm, by_lr in arms.items():
        lrs = sorted(by_lr)
        usable = {lr for lr in lrs if not any(f["diverged"] for f in by_lr[lr])}
        mean = {lr: statistics.mean(f["val_acc"] for f in by_lr[lr]) for lr in usable}
        pick = min(lrs, key=lambda lr: (-mean[lr], lr)) if usable else None
        for lr in lrs:
            rows = by_lr[lr]
            print(json.dumps({
                "arm": dict(zip(ARM_KEYS, arm, strict=True)), "lr": lr, "seeds": len(rows),
                "diverged": sum(f["diverged"] for f in rows),
                **{k: round(statistics.mean(f[k] for f in rows), 4)
                   for k in ("val_acc", "test_acc", "train_acc", "train_loss")},
                "feature_updates": sorted(f["feature_updates"] for f in rows),
                "pick": None if pick != lr else _label(lrs, usable, pick),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
