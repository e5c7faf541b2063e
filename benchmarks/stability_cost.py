"""What the stability measures cost, and how their sharpness depends on the probe's size.

Two comparisons in one run, on a trial of the default study (k_sweep: IL on mnist5k, MLP, SGD,
T=1000, a record every 100 steps; K=33 and lr 0.05 unless --set says otherwise):

1. λ_max of the Gauss-Newton matrix on the stability probe (max(probe_size, batch_size)
   training examples) against a probe twice as large, at θ₀ and at the trial's last
   linearisation point (the larger probe holds the smaller). λ_max is convex, so a sample's
   top eigenvalue is biased upward, the more the smaller the sample: the ratio says how much
   the probe's size, rather than the model, moves the number.
2. The whole trial with the stability measures on and off (``Trial(stability=False)``), run
   interleaved; the kernel measures stay on in both.

Run:   python -m benchmarks.stability_cost [--device cuda] [--set key=value ...] [--smoke]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from benchmarks import _common as C
from trainables import Trial, TrialConfig, parse_override
from trainables.stability import sharpness, stability_batch

DEFAULT_STUDY_TRIAL = dict(
    dataset="mnist5k", trainer="linearised", optimizer="sgd", total_steps=1000, eval_every=100,
    k=33, lr=0.05,
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    p = C.parser(__doc__)
    p.add_argument("--set", action="append", default=[], help="key=value config override")
    args = p.parse_args(argv)
    if args.threads is None and args.device == "cpu":
        args.threads = 1  # a Ray trial gets one core
    device = C.setup(args)
    base: dict[str, Any] = dict(DEFAULT_STUDY_TRIAL)
    if args.smoke:
        base.update(dataset="digits", total_steps=20, eval_every=10, k=4, n_train=256, n_test=128)
    base.update(dict(parse_override(kv) for kv in args.set))
    cfg = TrialConfig.from_mapping(base)
    print(
        f"\n## {cfg.model}, {cfg.dataset}, {cfg.trainer} K={cfg.k}, lr {cfg.lr}, "
        f"{cfg.total_steps} steps, batch {cfg.batch_size}, probe {cfg.probe_size}"
    )
    _probe_size(cfg, device)
    _trial_time(base, cfg, device, args)


def _probe_size(cfg: TrialConfig, device: torch.device) -> None:
    """λ_max on the stability probe and on one twice as large, at θ₀ and after training."""
    trial = Trial(cfg, device)
    points = {"θ₀": {k: v.detach().clone() for k, v in trial.theta.items()}}
    list(trial.records())
    points["last θ_s"] = {k: v.clone() for k, v in trial.state.theta_s.items()}
    size = max(cfg.probe_size, cfg.batch_size) if cfg.batch_size else len(trial.data.y_train)
    rows = []
    for name, params in points.items():
        row: list[Any] = [name]
        for n in (size, 2 * size):  # the same generator: the larger probe holds the smaller
            x, y = stability_batch(trial.data, n, n, cfg.seed)
            row += [len(y), sharpness(trial.model, params, x, y, cfg.loss)]
        rows.append([*row, row[4] / row[2]])
    print(C.table(["point", "probe n", "λ_max", "larger n", "λ_max", "larger / probe"], rows))
    worst = max(abs(r[-1] - 1) for r in rows)
    print(f"ratio λ_max on a probe twice as large / on the probe, furthest from 1: {1 + worst:.3f}")


def _trial_time(base: dict[str, Any], cfg: TrialConfig, device: torch.device, args) -> None:
    """The whole trial with the stability measures on and off, interleaved."""

    def trial(stability: bool):
        return lambda: list(Trial(base, device, stability=stability).records())

    variants = {"stability measures on": trial(True), "stability measures off": trial(False)}
    rounds = args.rounds or (1 if args.smoke else 3)
    t = C.interleaved(variants, rounds, 1, device, 0 if args.smoke else 1)
    off = "stability measures off"
    rows = [[k, t.median(k, "cpu"), t.median(k, "wall"), t.ratio(k, off, "cpu"),
             t.ratio(k, off, "wall")] for k in variants]  # fmt: skip
    print(f"\n{rounds} rounds, one trial each:")
    print(C.table(["trial", "cpu s", "wall s", "× off (cpu)", "× off (wall)"], rows))
    clock = "wall" if device.type == "cuda" else "cpu"
    extra = t.ratio("stability measures on", off, clock) - 1
    print(f"ratio stability measures' cost / the trial without them ({clock}): {extra:.3f}")


if __name__ == "__main__":
    main()
