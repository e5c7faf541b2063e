"""Target: adaptive placement of K reaches the grid's CI width on N₅₀ and N₉₀ with at most half
the trials of the default k_sweep grid. Printed per known curve: how far it gets, and where not.

Both studies run on the same task and budget and are scored with the same estimator
(study.plan.adaptive_fit: the report's logistic-in-log-N model, levels from K=1 and K=∞, percentile
bootstrap over seeds):
- grid: k_sweep's shape at one lr, K ∈ {1, 33, 62, 125, 200, 333, 500, ∞} at T = 1000 (N = 999,
  30, 16, 7, 4, 3, 1, 0) × r seeds; r = 5 is the default's 40 trials;
- adaptive: study.plan.adaptive_planner.Planner with the k_adaptive space's options, run to the same
  budget without its early stop, its CIs traced after every decision.

The task is synthetic unless --real: each trial's metric is a known logistic in log N plus
Gaussian seed noise, so the truth is known and replicates are cheap (the levels and noise are
about those of the k_sweep table in the README). Each case is repeated over `--reps` noise
seeds; the printed figures are medians over them. A CI width is the factor hi/lo of the 95%
interval (×1.5 means hi = 1.5·lo); "inf" means no interval (the bootstrap refits failed), and
"need inf" that the adaptive study never reached the grid's width within the budget.
--real runs real IL trials in-process (trainables.run, mnist5k at k_adaptive's settings, one
noise realisation), one at a time: as long as both studies' trials back to back.

Run:   python -m benchmarks.adaptive_k [--reps R] [--budget B] [--real] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from study.plan.adaptive_fit import bootstrap_factors, fit_curve, n_of_k
from study.plan.adaptive_planner import FINISHED, Options, Planner

T = 1000
GRID_K = (1, 33, 62, 125, 200, 333, 500, "inf")  # search_spaces/k_sweep.py at one lr
GRID_SEEDS = 5
LEVELS = (0.900, 0.925)  # a_inf, a_1
NOISE = 0.005  # seed spread of one trial's accuracy


@dataclass(frozen=True)
class Curve:
    """A known acc(N): where the transition lies and how sharp it is."""

    label: str
    n50: float
    slope: float

    def mean(self, n: int) -> float:
        if n == 0:
            return LEVELS[0]
        z = self.slope * (math.log(n) - math.log(self.n50))
        return LEVELS[0] + (LEVELS[1] - LEVELS[0]) / (1 + math.exp(-z))


CASES = (
    Curve("N50=3, s=1.5: inside the grid's dense N", 3.0, 1.5),
    Curve("N50=1.5, s=3: sharp, near one update", 1.5, 3.0),
    Curve("N50=20, s=2: N90 above the grid's top N (30)", 20.0, 2.0),
    Curve("N50=60, s=2: between the grid's top N and K=1", 60.0, 2.0),
)

Trial = Callable[[int | str, int], float]  # (K, seed) -> val_acc


def synthetic(curve: Curve, rep: int) -> Trial:
    def trial(k: int | str, seed: int) -> float:
        n = n_of_k(k, T)
        noise = np.random.default_rng([rep, n, seed]).standard_normal()
        return curve.mean(n) + NOISE * noise

    return trial


def factors(ns: Sequence[int], ys: Sequence[float], n_boot: int) -> tuple[float, float]:
    """CI factors (hi/lo) of N₅₀ and N₉₀; inf where there is no interval."""
    n, y = np.array(ns, float), np.array(ys, float)
    fit = fit_curve(n, y, T)
    if isinstance(fit, str):
        return math.inf, math.inf
    bands = bootstrap_factors(n, y, T, fit, n_boot, np.random.default_rng(0))
    return tuple(b[1] / b[0] if b and b[0] > 0 else math.inf for b in bands.values())  # type: ignore[return-value]


def grid_trace(trial: Trial, n_boot: int, max_seeds: int) -> list[tuple[int, float, float]]:
    """(trials, N₅₀ factor, N₉₀ factor) of the grid at 2 … max_seeds seeds per K."""
    out = []
    for r in range(2, max_seeds + 1):
        ks = [(k, s) for k in GRID_K for s in range(r)]
        ns = [n_of_k(k, T) for k, _ in ks]
        out.append((len(ks), *factors(ns, [trial(k, s) for k, s in ks], n_boot)))
    return out


def adaptive_trace(
    trial: Trial, budget: int, options: Options
) -> tuple[list[tuple[int, float, float]], list[int]]:
    """(trials, N₅₀ factor, N₉₀ factor) after each decision of the planner, and its N in
    proposal order."""
    planner = Planner(T, options)
    trace: list[tuple[int, float, float]] = []
    seen = 0
    while len(planner.proposals) < budget:
        proposal = planner.next()
        if proposal == FINISHED or proposal is None:
            break
        k, seed = proposal
        planner.record(len(planner.proposals) - 1, trial(k, seed))
        if len(planner.decisions) > seen:  # a decision was made before this proposal
            seen = len(planner.decisions)
    n, y = planner.observations()
    for d in planner.decisions:
        f50, f90 = (d.factors.get(q) or math.inf for q in ("n50", "n90"))
        trace.append((d.trials, f50, f90))
    trace.append((len(y), *factors(n.astype(int).tolist(), y.tolist(), options.n_boot)))
    return trace, [p.n for p in planner.proposals]


def trials_to_reach(trace: Sequence[tuple[int, float, float]], w50: float, w90: float) -> float:
    """Fewest trials at which both CI factors are at most (w50, w90); inf if never."""
    hits = [t for t, f50, f90 in trace if f50 <= w50 and f90 <= w90]
    return min(hits) if hits else math.inf


def real_trial(lr: float) -> Trial:
    """A real IL trial on mnist5k at k_adaptive's settings, in-process; its final val_acc."""
    import search_spaces
    from trainables import run

    fixed = dict(search_spaces.get("k_adaptive").fixed)
    fixed["lr"] = lr

    def trial(k: int | str, seed: int) -> float:
        records = list(run({**fixed, "k": k, "seed": seed}))
        last = records[-1]
        return math.nan if last.get("diverged") else float(last["val_acc"])

    return trial


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.3g}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20, help="noise seeds per case (median over)")
    p.add_argument("--budget", type=int, default=GRID_SEEDS * len(GRID_K), help="trials each")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap refits per CI")
    p.add_argument("--real", action="store_true", help="real mnist5k trials instead (slow)")
    p.add_argument("--smoke", action="store_true", help="2 reps, 1 case, 100 refits: seconds")
    args = p.parse_args(argv)
    import logging

    import torch

    import search_spaces
    from benchmarks._common import environment

    print(environment(torch.device("cpu")))  # hardware and versions first, as every benchmark
    logging.getLogger("study.plan.adaptive_planner").setLevel(
        logging.ERROR
    )  # its notes, once per run
    space = search_spaces.get("k_adaptive")
    n_boot = 100 if args.smoke else args.n_boot
    options = Options.from_mapping({**space.searcher_options, "stop": False, "n_boot": n_boot},
                                   "k_adaptive")  # fmt: skip
    reps, cases = (2, CASES[:1]) if args.smoke else (args.reps, CASES)
    print(f"# adaptive K vs grid: T={T}, {args.budget} trials each; grid = k_sweep's K x "
          f"{GRID_SEEDS} seeds at one lr; adaptive = k_adaptive's options ({options.seeds} "
          f"seeds/point, initial N {list(options.initial_n)}), its stop off")  # fmt: skip
    print(
        f"# CI = 95% percentile bootstrap over seeds ({n_boot} refits), same estimator for "
        "both; width = hi/lo; 'need' = fewest trials with both widths at most the grid's"
    )
    if args.real:
        lr = float(space.fixed.get("lr", 0.05))
        print(f"# real trials: mnist5k, lr {lr}, val_acc, one at a time in this process")
        labelled = [("real mnist5k", [real_trial(lr)])]
    else:
        print(f"# synthetic val_acc: levels {LEVELS}, noise sd {NOISE}; medians over {reps} "
              "noise seeds (each: one grid study and one adaptive study on the same draws)")  # fmt: skip
        labelled = [(c.label, [synthetic(c, rep) for rep in range(reps)]) for c in cases]
    t0, ratios = time.time(), []
    for label, trials in labelled:
        rows = []
        for trial in trials:
            grid = grid_trace(trial, n_boot, GRID_SEEDS)
            adaptive, order = adaptive_trace(trial, args.budget, options)
            _, g50, g90 = grid[-1]
            _, a50, a90 = adaptive[-1]
            rows.append((g50, g90, a50, a90, trials_to_reach(adaptive, g50, g90), order))
        g50, g90, a50, a90, need = (_median([r[i] for r in rows]) for i in range(5))
        grid_n = len(GRID_K) * GRID_SEEDS
        ratios.append((label, need / grid_n))
        print(f"\n## {label}")
        print(f"CI width of N50 / N90 at {args.budget} trials: grid x{_fmt(g50)} / x{_fmt(g90)}"
              f"   adaptive x{_fmt(a50)} / x{_fmt(a90)}")  # fmt: skip
        print(f"trials to reach the grid's width on both: grid {grid_n}   adaptive {_fmt(need)}"
              f"   (per noise seed: {', '.join(_fmt(r[4]) for r in rows)})")  # fmt: skip
        never = sum(math.isinf(r[4]) for r in rows)
        print(f"ratio adaptive / grid trials to the grid's width: {_fmt(need / grid_n)}"
              f" (target <= 0.5); adaptive never reached it in {never} of {len(rows)}")  # fmt: skip
        print(f"adaptive N in proposal order (noise seed 0): {rows[0][5]}")
    print("\n# summary: ratio adaptive / grid trials to the grid's CI width (target <= 0.5)")
    for label, ratio in ratios:
        print(f"ratio {_fmt(ratio)}  {label}")
    print(f"# {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
