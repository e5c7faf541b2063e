"""Adaptive K against the grid on real trials: how many trials each needs for the same CI width
of N₅₀ and N₉₀, on mnist5k at k_adaptive's settings (lr 0.05, T = 1000), over repeats whose
seeds differ.

What runs (benchmarks/adaptive_k.py compared the two only on known curves):
- grid: the k_adaptive space under `--searcher grid`, K ∈ {1, 33, 62, 125, 200, 333, 500, ∞}
  (N = 999, 30, 16, 7, 4, 3, 1, 0) × 5 seeds, 40 trials; its width is traced at 2, 3, 4 and 5
  seeds per K (16, 24, 32, 40 trials);
- adaptive: study.plan.adaptive_planner.Planner with k_adaptive's searcher options, its own stop
  off; its width is traced whenever every trial so far has reported (each of the planner's
  decision points), and it runs until it reaches the grid's width or the budget of 40. Where
  the searcher's own stop (both refinable CI factors ≤ ×1.5 in its own fit) would have ended
  the study is printed too.
The repeats run at once (threads over one pool of trial processes), since the searcher waits
for its 2 trials at each decision.
Repeat r uses seeds 1000·r + s, the convention of `--num-samples`, so no two repeats share a
trial; within a repeat, a (K, seed) both studies run is trained once and counted in each.
Each trial is trainables.run on the space's config in a worker process (what the study's
trainable runs, without Ray), one torch thread each, with the probe measures off unless
--measures (they use their own generators, so the final val_acc is the same); results can be
cached in a JSON file.

Both studies are scored by the report's own fit (reports.fit_feature_updates, the fits.csv
row: levels from K=1 and K=∞, logistic in ln N, percentile bootstrap over seeds within each N).
A threshold's width is hi/lo of its 95% interval, and counts as not reached (∞) when
- the fit is rejected (fit_ok false: a missing level, under three distinct N, levels that do
  not differ, a fit no better than the mean, or N₅₀ and N₉₀ both outside the sampled N), or
- the interval is censored: a bound outside the sampled N range, so the report prints NaN and
  a `*_lo_flag`/`*_hi_flag` ("< N_min", "> N_max") instead of a number.
A diverged trial is no point of either fit (as in the report) but counts as a trial spent.

The figure: per repeat, the trials the adaptive study needs until both its widths are at most
the grid's at 40 trials; the ratio is that over 40, median over repeats. `--grid-seeds g`
compares against the grid at g seeds per K instead (8·g trials: g = 2 is the first point of
its trace) when the full grid's 120 trials cannot be afforded; `--budget` caps the adaptive
study (default the space's 40). A grid threshold
that is itself censored or rejected at 40 trials sets no width; then the adaptive study needs
a bounded interval there. Also printed: the trials each needs to reach the searcher's own target
(×1.5 on both), "never" within the trials it ran.

Run:   nice -n 10 python -m benchmarks.adaptive_real [--repeats 3] [--grid-seeds 5] [--budget 40]
                                                      [--workers 6] [--cache F] [--measures]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from study.plan.adaptive_fit import Fit, n_of_k
from study.plan.adaptive_planner import FINISHED, Options, Planner

GRID_K: tuple[int | str, ...] = (1, 33, 62, 125, 200, 333, 500, "inf")
SMOKE_K: tuple[int | str, ...] = (1, 4, 8, 20, "inf")  # T = 40: N = 39, 9, 4, 1, 0
NAMES = ("n50", "n90")


# ---- trials ------------------------------------------------------------------------------------
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per trial, as a study's default --cpus-per-trial 1


def run_trial(config: dict[str, Any]) -> tuple[float, float]:
    """(final val_acc, seconds) of one trial; NaN when it diverged."""
    from trainables import run

    t0 = time.perf_counter()
    last = list(run(config))[-1]  # the final record
    value = math.nan if last.get("diverged") else float(last["val_acc"])
    return value, time.perf_counter() - t0


class Trials:
    """Runs (K, seed) trials of one fixed config, each once, in `workers` processes."""

    def __init__(self, fixed: dict[str, Any], workers: int, cache: Path | None) -> None:
        self.fixed, self.cache, self.lock = fixed, cache, threading.Lock()
        self.values: dict[str, list[float]] = {}
        if cache and cache.exists():
            self.values = json.loads(cache.read_text())
        self.pool = (ProcessPoolExecutor(workers, get_context("spawn"), _init_worker)
                     if workers > 1 else None)  # fmt: skip

    @staticmethod
    def key(k: int | str, seed: int) -> str:
        return f"{k}|{seed}"

    def get(self, pairs: Sequence[tuple[int | str, int]]) -> list[float]:
        """Final val_acc of each (K, seed), training those not yet run (repeats call this
        from their own threads; their seeds never overlap)."""
        todo = list(dict.fromkeys(p for p in pairs if self.key(*p) not in self.values))
        configs = [{**self.fixed, "k": k, "seed": s} for k, s in todo]
        done = self.pool.map(run_trial, configs) if self.pool else map(run_trial, configs)
        for pair, (value, seconds) in zip(todo, done, strict=True):
            with self.lock:
                self.values[self.key(*pair)] = [value, seconds]
                if self.cache:  # after each trial: a rerun trains it no more
                    self.cache.write_text(json.dumps(self.values))
        return [self.values[self.key(*p)][0] for p in pairs]

    def seconds(self) -> float:
        return sum(v[1] for v in self.values.values())

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


# ---- scoring -----------------------------------------------------------------------------------
def report_fit(pairs: Sequence[tuple[int | str, int]], values: Sequence[float], total: int,
               n_boot: int) -> dict[str, Any]:  # fmt: skip
    """The report's fits.csv row for these trials (one group, one config)."""
    import pandas as pd

    import reports

    rows = []
    for (k, seed), value in zip(pairs, values, strict=True):
        ok = math.isfinite(value)
        rows.append({"study": "bench", "trainer": "linearised", "seed": seed,
                     "k": math.inf if k == "inf" else float(k), "total_steps": total,
                     "feature_updates": n_of_k(k, total), "val_acc": value, "usable": ok,
                     "exclusion": "" if ok else "diverged"})  # fmt: skip
    fits = reports.fit_feature_updates(pd.DataFrame(rows), metric="val_acc", n_boot=n_boot)
    return fits.iloc[0].to_dict() if len(fits) else {"fit_ok": False, "reason": "no curve"}


def widths(row: dict[str, Any]) -> tuple[dict[str, float], str]:
    """hi/lo per threshold (∞ when rejected or censored) and why not, '' when both are bounded."""
    if not bool(row.get("fit_ok")):
        return dict.fromkeys(NAMES, math.inf), "rejected: " + str(row.get("reason", ""))[:60]
    out, why = {}, []
    for name in NAMES:
        lo, hi = row.get(f"{name}_lo", math.nan), row.get(f"{name}_hi", math.nan)
        flags = [str(row.get(f"{name}{s}_flag") or "") for s in ("_lo", "_hi")]
        if any(flags) or not (np.isfinite(lo) and np.isfinite(hi) and lo > 0):
            out[name] = math.inf
            why.append(f"{name} censored ({', '.join(f for f in flags if f) or 'no interval'})")
        else:
            out[name] = hi / lo
    return out, "; ".join(why)


def own_stop(planner: Planner, target: float) -> int | None:
    """Trials at which the searcher's own rule (stop on) would have finished, if it would."""
    top = n_of_k(2, planner.total_steps)
    for d in planner.decisions:
        if d.fit is None:
            continue
        fit = Fit(**d.fit)
        active = [name for name, q in zip(NAMES, (0.5, 0.9), strict=True)
                  if 1 <= fit.n_at(q) <= top
                  and (d.factors.get(name) is None or d.factors[name] > target)]  # fmt: skip
        if not active:
            return d.trials
    return None


Trace = list[tuple[int, dict[str, float], str]]  # (trials spent, widths, why unbounded)


def grid_trace(trials: Trials, grid_k: Sequence[int | str], seeds: Sequence[int], total: int,
               n_boot: int) -> Trace:  # fmt: skip
    out: Trace = []
    for r in range(2, len(seeds) + 1):
        pairs = [(k, s) for k in grid_k for s in seeds[:r]]
        out.append((len(pairs), *widths(report_fit(pairs, trials.get(pairs), total, n_boot))))
    return out


def adaptive_trace(trials: Trials, options: Options, offset: int, total: int, budget: int,
                   n_boot: int, until: dict[str, float]) -> tuple[Trace, Planner]:  # fmt: skip
    """Run the planner until its widths are at most `until` or to the budget, proposals
    batched as Tune would run them at once (every proposal the planner has before it waits)."""
    planner, out = Planner(total, options), []
    while len(planner.proposals) < budget and not math.isfinite(need(out, until)):
        batch: list[tuple[int | str, int]] = []
        while len(planner.proposals) < budget:
            proposal = planner.next()
            if proposal is None or proposal == FINISHED:
                break
            batch.append(proposal)  # type: ignore[arg-type]
        if not batch:
            break
        start = len(planner.proposals) - len(batch)
        for i, value in enumerate(trials.get([(k, s + offset) for k, s in batch])):
            planner.record(start + i, value)
        pairs = [(p.k, p.seed + offset) for p in planner.proposals]
        row = report_fit(pairs, trials.get(pairs), total, n_boot)
        out.append((len(pairs), *widths(row)))
    return out, planner


def need(trace: Trace, target: dict[str, float]) -> float:
    """Fewest trials at which every width is at most its target (a bounded interval where the
    target is ∞); ∞ if never."""
    hits = [t for t, w, _ in trace
            if all(math.isfinite(w[q]) and w[q] <= target[q] for q in NAMES)]  # fmt: skip
    return min(hits) if hits else math.inf


def _fmt(v: float) -> str:
    return "never" if math.isinf(v) else f"{v:.3g}"


def _trace_line(trace: Trace) -> str:
    return "  ".join(f"{t}:x{_fmt(w['n50'])}/x{_fmt(w['n90'])}" for t, w, _ in trace)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="repeats, seeds 1000·r + s")
    p.add_argument("--workers", type=int, default=6, help="trials at once (processes)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap refits per report fit")
    p.add_argument("--cache", type=Path, help="JSON file of finished trials (reused on rerun)")
    p.add_argument("--grid-seeds", type=int, default=5, help="seeds per K of the grid (>= 2)")
    p.add_argument("--budget", type=int, default=0, help="adaptive trials at most (0: space's)")
    p.add_argument("--measures", action="store_true", help="keep the probe measures on")
    p.add_argument("--smoke", action="store_true", help="digits, T = 40, 1 repeat: seconds")
    args = p.parse_args(argv)
    import logging

    import torch

    import search_spaces
    from benchmarks._common import environment

    print(environment(torch.device("cpu")))
    logging.getLogger("study.plan.adaptive_planner").setLevel(logging.ERROR)
    space = search_spaces.get("k_adaptive")
    # the feature-learning and stability measures draw from their own generators and change no
    # trained value (val_acc is the same with them off); off, a trial costs less
    fixed = dict(space.fixed) | ({} if args.measures else {"probe_size": 0})
    grid_k, seeds, budget, repeats, n_boot, workers = (
        GRID_K, args.grid_seeds, args.budget or int(space.num_samples or 40), args.repeats,
        args.n_boot, args.workers)  # fmt: skip
    opts: dict[str, Any] = {**space.searcher_options, "stop": False}
    if args.smoke:
        fixed |= {k: v for k, v in space.smoke.items() if k not in ("k", "seed")}
        grid_k, seeds, budget, repeats, n_boot, workers = SMOKE_K, 2, 10, 1, 50, 1
        opts |= {"initial_n": [1, 4], "n_boot": 50}
    total = int(fixed["total_steps"])
    options = Options.from_mapping(opts, "k_adaptive")
    target = options.target_factor
    print(f"# adaptive K vs grid on real trials: {fixed['dataset']}, lr {fixed['lr']}, T={total}, "
          f"val_acc; grid = k_adaptive under --searcher grid (K {list(grid_k)} x {seeds} seeds"
          f" = {len(grid_k) * seeds} trials); adaptive = its own searcher, stop off, until it "
          f"reaches the grid's width or {budget} trials; {repeats} repeats, seeds 1000*r + s; "
          f"measures {'on' if args.measures else 'off (probe_size 0)'}")  # fmt: skip
    print(f"# width = hi/lo of the report's 95% CI ({n_boot} bootstrap refits); 'never' = a "
          "rejected fit or a censored bound (a *_lo/_hi_flag in fits.csv); a diverged trial "
          "counts as spent, not as a point")  # fmt: skip
    trials = Trials(fixed, workers, args.cache)

    def one(r: int) -> tuple[Trace, Trace, Planner]:
        offset = 1000 * r
        grid = grid_trace(trials, grid_k, [offset + s for s in range(seeds)], total, n_boot)
        adaptive, planner = adaptive_trace(trials, options, offset, total, budget, n_boot,
                                           grid[-1][1])  # fmt: skip
        return grid, adaptive, planner

    t0, ratios, rows = time.time(), [], []
    try:  # the repeats at once: the searcher waits for its few trials, the pool need not
        with ThreadPoolExecutor(repeats) as threads:
            results = list(threads.map(one, range(repeats)))
    finally:
        trials.close()
    at = {q: target for q in NAMES}
    for r, (grid, adaptive, planner) in enumerate(results):
        offset = 1000 * r
        g_total, g_width, g_why = grid[-1]
        a_need = need(adaptive, g_width)
        ratios.append(a_need / g_total)
        own = own_stop(planner, target)
        lost = sum(p.value is None for p in planner.proposals)
        rows.append((need(grid, at), need(adaptive, at)))
        print(f"\n## repeat {r} (seeds {offset}..{offset + seeds - 1})")
        print(f"grid     widths N50/N90 by trials: {_trace_line(grid)}"
              + (f"   [{g_total}: {g_why}]" if g_why else ""))  # fmt: skip
        print(f"adaptive widths N50/N90 by trials: {_trace_line(adaptive)}")
        unbounded = [f"{t}: {why}" for t, _, why in adaptive if why]
        print(f"adaptive unbounded at: {'; '.join(unbounded) or 'none'}")
        print(f"adaptive N in proposal order: {[p.n for p in planner.proposals]}; "
              f"diverged {lost}; its own stop (x{target:g}) would come at "
              f"{f'{own} trials' if own is not None else 'no decision it made'}")  # fmt: skip
        print(f"trials to the grid's width at {g_total} (x{_fmt(g_width['n50'])} / "
              f"x{_fmt(g_width['n90'])}): adaptive {_fmt(a_need)}, ratio "
              f"{_fmt(a_need / g_total)}")  # fmt: skip
        print(f"trials to x{target:g} on both: grid {_fmt(rows[-1][0])}, adaptive "
              f"{_fmt(rows[-1][1])} (it stops at the grid's width)")  # fmt: skip
    median = statistics.median(ratios)
    print(
        f"\n# summary over {repeats} repeats: trials the adaptive study needs to reach the "
        f"grid's CI width at {len(grid_k) * seeds} trials on both N50 and N90, over "
        f"{len(grid_k) * seeds} (real trials)"
    )
    print(
        f"ratio adaptive / grid trials to the grid's width, real trials: {_fmt(median)} "
        f"(median; per repeat {', '.join(_fmt(x) for x in ratios)})"
    )
    print(
        f"trials to x{target:g} on both, per repeat: grid "
        f"{', '.join(_fmt(g) for g, _ in rows)}; adaptive {', '.join(_fmt(a) for _, a in rows)}"
    )
    print(
        f"# {len(trials.values)} distinct trials, {trials.seconds():.0f} s of trial time, "
        f"{time.time() - t0:.0f} s wall"
    )


if __name__ == "__main__":
    main()
