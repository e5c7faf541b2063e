"""Adaptive placement of K: propose (K, seed) trials where a refit of acc(N) says most is learned.

The curve is the report's model (reports/_fit.py), refitted here without importing reports:

    acc(N) = a_inf + (a_1 − a_inf) · σ(s · (ln N − ln N₅₀)),   N = ⌈T/K⌉ − 1 (uniform schedule)

with the levels a_inf (K=∞, N=0) and a_1 (K=1, N=T−1) the means of their trials.

The searcher, for one fixed config apart from (k, seed):
1. runs the references K=1 and K=∞, then a coarse log grid in N, each point with `seeds` seeds
   proposed one after another (replicates before moving on);
2. then, whenever every trial so far has reported, refits the curve and bootstraps the CIs of
   N₅₀ and N₉₀ (seeds resampled within each N). The next point is the N (or reference) whose
   `seeds` new trials most shrink the delta-method variances of ln N_q, relative to now, of the
   thresholds whose CI factor hi/lo is still above `target_factor`. A threshold below one
   feature update cannot be refined (no uniform K lies there): the searcher notes it, logs it
   and refines the other only. When the fit fails it bisects, in log N, the interval with the
   largest change in mean relative to the seed spread;
3. stops when every refinable threshold's CI factor is at most `target_factor`, or when Tune's
   `num_samples` trials have been proposed.

The maths is in `study.plan.adaptive_fit`; the proposal and stopping rules, the `Planner` state
machine, are here, pure and picklable; `study.execute.adaptive_searcher` wraps them for Tune.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from study.errors import StudyError
from study.plan.adaptive_fit import (
    QUANTILES,
    bisect_point,
    bootstrap_factors,
    candidate_ns,
    design_point,
    fit_curve,
    k_for_n,
    n_of_k,
    snap_n,
)
from trainables import TrialConfig

log = logging.getLogger(__name__)

FINISHED = "FINISHED"  # Planner.next(): no more proposals


# ---- the state machine -----------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """How the searcher places trials (a space's `searcher_options`)."""

    seeds: int = 2  # trials per proposed point, seeds 0, 1, … (more on a revisit); 2 give a
    # spread, pooled over points, and twice the decisions of 3 at the same budget
    initial_n: tuple[int, ...] = ()  # the coarse log grid in N; () = 3 points, 1 … ≈ T/60
    target_factor: float = 1.5  # stop when CI hi/lo of N₅₀ and N₉₀ are at most this
    n_boot: int = 200  # bootstrap refits per decision
    seed: int = 0  # of the bootstrap's generator (mixed with the number of results)
    stop: bool = True  # False: never stop early (benchmarks trace the CI to the budget)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> Options:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise StudyError(f"{where}: unknown searcher option {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(known))}")  # fmt: skip
        opts = cls(**{**values, "initial_n": tuple(values.get("initial_n", ()))})
        if opts.seeds < 2 or opts.target_factor <= 1 or opts.n_boot < 20:
            raise StudyError(f"{where}: searcher options need seeds >= 2 (a spread), "
                             "target_factor > 1 and n_boot >= 20")  # fmt: skip
        return opts


@dataclass
class Proposal:
    """One proposed trial: where, which seed, and (once complete) its metric."""

    n: int
    k: int | str
    seed: int
    done: bool = False
    value: float | None = None  # None: errored or diverged, no point of the fit


@dataclass
class Decision:
    """What one refit found, kept in the state (and shown by benchmarks and reports)."""

    trials: int  # finished trials it saw
    fit: dict[str, float] | None
    ci: dict[str, list[float] | None]  # "n50" / "n90" → [lo, hi]
    factors: dict[str, float | None]  # hi / lo
    chose: int | None  # N proposed next
    why: str


@dataclass
class Planner:
    """Proposals for one fixed config: pure state, saved and restored whole."""

    total_steps: int
    options: Options = field(default_factory=Options)
    proposals: list[Proposal] = field(default_factory=list)
    queue: list[tuple[int, int]] = field(default_factory=list)  # (n, seed) still to propose
    decisions: list[Decision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said once each, also logged
    finished: str = ""  # why it stopped; "" while running

    def __post_init__(self) -> None:
        if not self.proposals and not self.queue:
            for n in [self.total_steps - 1, 0, *self.initial_grid()]:
                self._enqueue(n)

    def initial_grid(self) -> list[int]:
        """The coarse log grid in N that follows the references."""
        wanted = self.options.initial_n or np.geomspace(1, max(8.0, self.total_steps / 60), 3)
        grid = {snap_n(float(v), self.total_steps) for v in wanted}
        return sorted(n for n in grid if 1 <= n < self.total_steps - 1)

    # -- proposals
    def next(self) -> tuple[int | str, int] | str | None:
        """The next (K, seed), FINISHED, or None: wait for results before refitting."""
        while True:
            if self.finished:
                return FINISHED
            if not self.queue:
                if any(not p.done for p in self.proposals):
                    return None
                self._decide()
                continue
            n, seed = self.queue.pop(0)
            k = k_for_n(n, self.total_steps)
            if any(p.k == k and p.seed == seed for p in self.proposals):
                continue  # never the same (K, seed) twice: a copy is not a seed
            self.proposals.append(Proposal(n=n, k=k, seed=seed))
            return k, seed

    def record(self, index: int, value: float | None) -> None:
        """Proposal `index` finished with metric `value` (None or NaN: no point of the fit)."""
        ok = value is not None and math.isfinite(value)
        self.proposals[index].done = True
        self.proposals[index].value = float(value) if ok else None

    def observations(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, metric) of every finished trial with a value."""
        done = [p for p in self.proposals if p.done and p.value is not None]
        return np.array([p.n for p in done], float), np.array([p.value for p in done], float)

    # -- decisions
    def _enqueue(self, n: int) -> None:
        used = {p.seed for p in self.proposals if p.n == n} | {s for m, s in self.queue if m == n}
        seeds = [s for s in range(len(used) + self.options.seeds) if s not in used]
        self.queue.extend((n, s) for s in seeds[: self.options.seeds])

    def _note(self, text: str, key: str = "") -> None:
        """Say `text` once per `key` (a note's subject: the same fact with new numbers is no
        news); kept in the state and logged."""
        if (key and any(n.startswith(key) for n in self.notes)) or text in self.notes:
            return
        self.notes.append(text)
        log.warning("adaptive K: %s", text)

    def _decide(self) -> None:
        """Refit, then queue the next point or finish."""
        n, y = self.observations()
        T, opts = self.total_steps, self.options
        rng = np.random.default_rng([opts.seed, len(y)])  # resumes draw what they would have
        try:
            fit = fit_curve(n, y, T)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:  # never stop Tune
            fit = f"the fit raised {type(exc).__name__}: {exc}"
        record = Decision(trials=len(y), fit=None, ci={}, factors={}, chose=None, why="")
        self.decisions.append(record)
        if isinstance(fit, str):
            chose, why = bisect_point(n, y, T)
            record.why = f"fit failed ({fit}): bisect" if chose else why
            if chose is None:
                self._note(why)
                self.finished = why
                return
            record.chose = chose
            self._enqueue(chose)
            return
        record.fit = asdict(fit)
        try:
            bands = bootstrap_factors(n, y, T, fit, opts.n_boot, rng)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            bands = dict.fromkeys(QUANTILES)  # no interval: every threshold stays active
        active, top = [], n_of_k(2, T)
        for q, band in bands.items():
            name, label, nq = f"n{round(100 * q)}", f"N{round(100 * q)}", fit.n_at(q)
            record.ci[name] = list(band) if band else None
            record.factors[name] = band[1] / band[0] if band and band[0] > 0 else None
            if nq < 1:
                self._note(f"{label} ≈ {nq:.3g} lies below one feature update: no uniform K "
                           "gives it, so it is not refined", key=f"{label} ≈")  # fmt: skip
            elif nq > top:
                self._note(f"{label} ≈ {nq:.3g} lies above the largest N below K=1 ({top}): "
                           "not refined", key=f"{label} ≈")  # fmt: skip
            elif record.factors[name] is None or record.factors[name] > opts.target_factor:
                active.append(q)
        if not active and opts.stop:
            why = ("the transition lies below one feature update" if fit.n_at(0.9) < 1
                   else f"the CIs of the refinable thresholds are within x{opts.target_factor:g}")  # fmt: skip
            self._note(f"stopping after {len(y)} trials: {why}")
            self.finished = why
            return
        counts: dict[int, int] = {}
        for v in n:
            counts[int(v)] = counts.get(int(v), 0) + 1
        record.chose = design_point(fit, counts, T, active or QUANTILES, opts.seeds,
                                    candidate_ns(T))  # fmt: skip
        record.why = "largest drop in Var ln N_q for " + ", ".join(
            f"N{round(100 * q)}" for q in active or QUANTILES
        )
        self._enqueue(record.chose)

    # -- persistence
    def state(self) -> dict[str, Any]:
        """Everything, as plain data."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Planner:
        opts = dict(state["options"])
        return cls(
            total_steps=state["total_steps"],
            options=Options(**{**opts, "initial_n": tuple(opts["initial_n"])}),
            proposals=[Proposal(**p) for p in state["proposals"]],
            queue=[tuple(q) for q in state["queue"]],
            decisions=[Decision(**d) for d in state["decisions"]],
            notes=list(state["notes"]),
            finished=state["finished"],
        )


SWEPT = ("k", "seed")  # the keys the searcher places


def check_space(space: Any) -> tuple[int, Options]:
    """(T, options) for a space the searcher can serve; StudyError naming what is off."""
    where = f"--searcher adaptive on space {space.name!r}"
    other = [k for k in [*space.grid, *space.distributions] if k not in SWEPT]
    if other:
        raise StudyError(f"{where}: it places K and seed for one config; fix "
                         f"{', '.join(other)} with --set (e.g. --set {other[0]}=...)")  # fmt: skip
    if "k" in space.fixed:
        raise StudyError(f"{where}: k is fixed (--set k=...); the searcher places K itself")
    if "total_steps" not in space.fixed:
        raise StudyError(f"{where}: needs a fixed total_steps (T), from which N = ceil(T/K) - 1")
    if space.metric.startswith("test_"):
        raise StudyError(f"{where}: metric {space.metric} selects on the test set; use val_*")
    try:
        cfg = TrialConfig.from_mapping({**space.fixed, "k": 1})
    except ValueError as exc:
        raise StudyError(f"{where}: {exc}") from None
    if cfg.trainer != "linearised":
        raise StudyError(f"{where}: trainer={cfg.trainer} ignores K; use trainer=linearised")
    if cfg.schedule != "uniform":
        raise StudyError(f"{where}: schedule={cfg.schedule}; N = ceil(T/K) - 1 holds for uniform")
    if cfg.total_steps < 4:
        raise StudyError(f"{where}: total_steps={cfg.total_steps} leaves no N between K=1 and ∞")
    return cfg.total_steps, Options.from_mapping(space.searcher_options, where)
