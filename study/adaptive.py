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

The maths (N ↔ K, fit, bootstrap, proposal and stopping rules, the `Planner` state machine) is
plain Python and NumPy; only `AdaptiveSearcher` and `make_searcher` touch Ray.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from study.errors import StudyError

log = logging.getLogger(__name__)

INF = "inf"  # the config value of K = ∞
QUANTILES = (0.5, 0.9)  # N₅₀ and N₉₀
CI_LEVEL = 0.95  # percentile bootstrap interval, as the report's
MIN_DISTINCT_N = 3  # two fitted parameters need three distinct N to be over-determined
LOG_SLOPE_BOUNDS = (math.log(0.05), math.log(50.0))  # the report's bounds on s
FINISHED = "FINISHED"  # Planner.next(): no more proposals


# ---- N ↔ K (uniform schedule) --------------------------------------------------------------
def n_of_k(k: int | str | float, total_steps: int) -> int:
    """Feature updates of a uniform schedule: ⌈T/K⌉ − 1; K = ∞ (or K ≥ T) gives 0."""
    if k == INF or float(k) >= total_steps:
        return 0
    return math.ceil(total_steps / int(k)) - 1


def k_for_n(n: int, total_steps: int) -> int | str:
    """The integer K whose N = ⌈T/K⌉ − 1 is `n` (the smallest such, ⌈T/(n+1)⌉); ValueError if
    no integer K gives exactly `n` (e.g. n between T/2 and T − 1)."""
    if n == 0:
        return INF
    k = math.ceil(total_steps / (n + 1))
    if not 1 <= n <= total_steps - 1 or n_of_k(k, total_steps) != n:
        raise ValueError(f"no integer K gives N = {n} feature updates at T = {total_steps}")
    return k


def snap_n(n: float, total_steps: int) -> int:
    """The achievable N ≥ 1 of the K nearest T/(n+1): what a wish for `n` updates can get."""
    k = max(2, min(total_steps - 1, round(total_steps / (max(n, 1.0) + 1))))
    return n_of_k(k, total_steps)


def candidate_ns(total_steps: int, count: int = 64) -> list[int]:
    """Achievable N from 1 to the largest below K=1's (K=2), log-spaced, without repeats."""
    top = n_of_k(2, total_steps)
    if top < 1:
        return []
    return sorted({snap_n(float(v), total_steps) for v in np.geomspace(1, top, count)})


# ---- the curve -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """The fitted curve: levels from the references, (ln N₅₀, s) by least squares."""

    a_inf: float
    a_1: float
    log_n50: float
    slope: float

    def n_at(self, q: float) -> float:
        """N_q: feature updates that recover a fraction q of the gap."""
        return math.exp(self.log_n50) * (q / (1 - q)) ** (1 / self.slope)


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _cells(n: np.ndarray, total_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks: K=∞ trials, K=1 trials, and the points in between."""
    lazy, sgd = n == 0, n == total_steps - 1
    return lazy, sgd, ~lazy & ~sgd


def _fit_many(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    gap: np.ndarray,
    a_inf: np.ndarray,
    start: tuple[float, float],
    iters: int = 60,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of (ln N₅₀, ln s) for B curves at once (Levenberg-Marquardt).

    x, y: the points' ln N and metric (m,); w: each curve's weights on them (B, m); gap, a_inf:
    each curve's levels (B,). Returns (ln N₅₀, s, ok), each (B,); bounds as the report's fit.
    """
    lo, hi = x.min() - math.log(1e3), x.max() + math.log(1e3)
    (vlo, vhi), count = LOG_SLOPE_BOUNDS, len(gap)
    u = np.full(count, np.clip(start[0], lo, hi))
    v = np.full(count, np.clip(math.log(start[1]), vlo, vhi))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _lm(x, y, w, gap, a_inf, u, v, (lo, hi), iters)


def _lm(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    gap: np.ndarray,
    a_inf: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    bounds: tuple[float, float],
    iters: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The iterations of `_fit_many`."""
    (lo, hi), (vlo, vhi) = bounds, LOG_SLOPE_BOUNDS
    lam = np.full(len(gap), 1e-3)

    def cost(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = a_inf[:, None] + gap[:, None] * _expit(np.exp(v)[:, None] * (x - u[:, None])) - y
        return (w * r * r).sum(1)

    now = cost(u, v)
    for _ in range(iters):
        s = np.exp(v)[:, None]
        d = x - u[:, None]
        sig = _expit(s * d)
        r = a_inf[:, None] + gap[:, None] * sig - y
        dz = gap[:, None] * sig * (1 - sig)
        jac = np.stack([-s * dz, s * d * dz], axis=-1)  # (B, m, 2)
        a = np.einsum("bm,bmi,bmj->bij", w, jac, jac)
        g = np.einsum("bm,bmi,bm->bi", w, jac, r)
        # (A + λ·diag A) step = −g, solved in closed form (2×2); a saturated curve has A ≈ 0,
        # and then no step is taken rather than a singular solve
        a00 = a[:, 0, 0] * (1 + lam) + 1e-12
        a11 = a[:, 1, 1] * (1 + lam) + 1e-12
        det = a00 * a11 - a[:, 0, 1] * a[:, 1, 0]
        safe = np.abs(det) > 1e-300
        det = np.where(safe, det, 1.0)
        step = np.stack([(-a11 * g[:, 0] + a[:, 0, 1] * g[:, 1]) / det,
                         (a[:, 1, 0] * g[:, 0] - a00 * g[:, 1]) / det], axis=1)  # fmt: skip
        step = np.where(safe[:, None] & np.isfinite(step), step, 0.0)
        u_new, v_new = np.clip(u + step[:, 0], lo, hi), np.clip(v + step[:, 1], vlo, vhi)
        new = cost(u_new, v_new)
        better = new < now
        u, v, now = np.where(better, u_new, u), np.where(better, v_new, v), np.minimum(new, now)
        lam = np.where(better, lam / 3, lam * 4)
    ok = np.isfinite(u) & np.isfinite(v) & (gap != 0) & ~np.isclose(v, vlo, atol=1e-6)
    return u, np.exp(v), ok


def _levels(n: np.ndarray, y: np.ndarray, w: np.ndarray, total_steps: int) -> tuple:
    """Weighted means of the K=∞ and K=1 trials, per row of weights `w` (B, trials)."""
    lazy, sgd, _ = _cells(n, total_steps)
    a_inf = (w[:, lazy] * y[lazy]).sum(1) / w[:, lazy].sum(1)
    a_1 = (w[:, sgd] * y[sgd]).sum(1) / w[:, sgd].sum(1)
    return a_inf, a_1


def fit_curve(
    n: np.ndarray,
    y: np.ndarray,
    total_steps: int,
) -> Fit | str:
    """Least-squares fit of the curve to trials at N = `n` with metric `y`; a string says why
    not (a missing level, equal levels, too few distinct N, a slope at its lower bound)."""
    n, y = np.asarray(n, float), np.asarray(y, float)
    lazy, sgd, points = _cells(n, total_steps)
    if not lazy.any() or not sgd.any():
        return "a reference level (K=1 or K=∞) has no finished trial"
    if len(np.unique(n[points])) < MIN_DISTINCT_N:
        return f"fewer than {MIN_DISTINCT_N} distinct N between the references"
    a_inf, a_1 = _levels(n, y, np.ones((1, len(n))), total_steps)
    if a_1[0] == a_inf[0]:
        return "the K=1 and K=∞ levels are equal"
    x, yp = np.log(n[points]), y[points]
    frac = (yp - a_inf[0]) / (a_1[0] - a_inf[0])
    best: tuple[float, float, float] | None = None
    # a few starts: a curve that is flat over the sampled N has more than one local minimum
    for u0 in (float(x[np.argmin(np.abs(frac - 0.5))]), float(x.min()), float(x.max())):
        u, s, ok = _fit_many(x, yp, np.ones((1, len(x))), a_1 - a_inf, a_inf, (u0, 1.0))
        if ok[0]:
            r = a_inf[0] + (a_1[0] - a_inf[0]) * _expit(s[0] * (x - u[0])) - yp
            if best is None or float(r @ r) < best[0]:
                best = (float(r @ r), float(u[0]), float(s[0]))
    if best is None:
        return "the fit found no saturating transition (slope at its lower bound)"
    return Fit(float(a_inf[0]), float(a_1[0]), best[1], best[2])


def bootstrap_factors(
    n: np.ndarray,
    y: np.ndarray,
    total_steps: int,
    fit: Fit,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[float, tuple[float, float] | None]:
    """Percentile CI (lo, hi) of N_q for each q in QUANTILES, resampling trials within each N
    (references included); None where fewer than half the refits succeed."""
    n, y = np.asarray(n, float), np.asarray(y, float)
    w = np.zeros((n_boot, len(n)))
    for v in np.unique(n):  # a resample within a cell is a multinomial weight on its trials
        cell = np.nonzero(n == v)[0]
        w[:, cell] = rng.multinomial(len(cell), np.full(len(cell), 1 / len(cell)), size=n_boot)
    a_inf, a_1 = _levels(n, y, w, total_steps)
    points = _cells(n, total_steps)[2]
    u, s, ok = _fit_many(np.log(n[points]), y[points], w[:, points], a_1 - a_inf, a_inf,
                         (fit.log_n50, fit.slope))  # fmt: skip
    if ok.sum() < max(10, n_boot // 2):
        return dict.fromkeys(QUANTILES)
    tail = 100 * (1 - CI_LEVEL) / 2
    out = {}
    for q in QUANTILES:
        nq = np.exp(u[ok]) * (q / (1 - q)) ** (1 / s[ok])
        lo, hi = np.percentile(nq, [tail, 100 - tail])
        out[q] = (float(lo), float(hi))
    return out


# ---- where to look next ----------------------------------------------------------------------
def _row(fit: Fit, n: float, total_steps: int) -> np.ndarray:
    """d acc / d (a_inf, a_1, ln N₅₀, ln s) of one trial at N = n."""
    if n == 0:
        return np.array([1.0, 0.0, 0.0, 0.0])
    if n == total_steps - 1:
        return np.array([0.0, 1.0, 0.0, 0.0])
    z = math.log(n) - fit.log_n50
    sig = float(_expit(np.array(fit.slope * z)))
    dz = (fit.a_1 - fit.a_inf) * sig * (1 - sig)
    return np.array([1 - sig, sig, -fit.slope * dz, fit.slope * z * dz])


def _target(q: float, fit: Fit) -> np.ndarray:
    """d ln N_q / d (a_inf, a_1, ln N₅₀, ln s)."""
    return np.array([0.0, 0.0, 1.0, -math.log(q / (1 - q)) / fit.slope])


def design_point(
    fit: Fit,
    counts: Mapping[int, int],
    total_steps: int,
    active: Sequence[float],
    replicates: int,
    candidates: Iterable[int],
) -> int:
    """The N (0 and T−1 are the references) whose `replicates` new trials most shrink
    Σ_q Var(ln N_q) / Var_now(ln N_q) over the `active` thresholds (delta method; the noise
    level cancels). Relative, so that N₉₀, whose variance carries the slope's, does not take
    every trial from N₅₀: the stop needs both narrow."""
    info = 1e-9 * np.eye(4)
    for n, c in counts.items():
        r = _row(fit, n, total_steps)
        info += c * np.outer(r, r)
    targets = [_target(q, fit) for q in active]
    now = np.linalg.pinv(info)
    scale = [max(float(t @ now @ t), 1e-300) for t in targets]
    best, best_score = None, math.inf
    for n in [0, total_steps - 1, *candidates]:
        r = _row(fit, n, total_steps)
        cov = np.linalg.pinv(info + replicates * np.outer(r, r))
        score = sum(float(t @ cov @ t) / v for t, v in zip(targets, scale, strict=True))
        if score < best_score - 1e-12:
            best, best_score = n, score
    assert best is not None
    return best


def bisect_point(n: np.ndarray, y: np.ndarray, total_steps: int) -> tuple[int | None, str]:
    """The geometric midpoint of the adjacent sampled N whose means differ most relative to
    their seed spread; (None, why) when no interval can be split."""
    n, y = np.asarray(n, float), np.asarray(y, float)
    values = np.unique(n)
    spread = [float(y[n == v].std(ddof=1)) if (n == v).sum() > 1 else math.nan for v in values]
    pooled = float(np.nanmean(spread)) if not np.all(np.isnan(spread)) else 0.0
    scored = []
    for i in range(len(values) - 1):
        a, b = values[i], values[i + 1]
        ya, yb = y[n == a], y[n == b]
        se = math.sqrt(pooled**2 * (1 / len(ya) + 1 / len(yb))) or 1e-12
        scored.append((abs(yb.mean() - ya.mean()) / se, a, b))
    why = "no interval between sampled N can be split"
    for _, a, b in sorted(scored, reverse=True):
        if a == 0 and b <= 1:
            why = "the largest change lies between N = 0 and N = 1: below one feature update"
            continue
        mid = snap_n(math.sqrt(max(a, 1.0) * b), total_steps)
        if a < mid < b:
            return mid, ""
    return None, why


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


# ---- Ray Tune -------------------------------------------------------------------------------
def _searcher_class() -> type:
    """AdaptiveSearcher, built on first use so that the maths above imports without Ray."""
    from ray.tune.search import Searcher

    class AdaptiveSearcher(Searcher):
        """A Tune Searcher around a `Planner`: suggests {"k", "seed"}, reads the metric on
        completion. Metric and mode come from TuneConfig (set once there: Tune refuses both)."""

        def __init__(self, total_steps: int, options: Options | None = None) -> None:
            super().__init__()
            self.planner = Planner(total_steps, options or Options())
            self.trial_index: dict[str, int] = {}

        def set_search_properties(
            self, metric: str | None, mode: str | None, config: dict, **spec: Any
        ) -> bool:
            """Take metric and mode; the config's choice over k and seed is ours to fill in."""
            if metric:
                self._metric = metric
            if mode:
                self._mode = mode
            return True

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if trial_id in self.trial_index:  # asked again for a trial already placed
                p = self.planner.proposals[self.trial_index[trial_id]]
                return {"k": p.k, "seed": p.seed}
            proposal = self.planner.next()
            if proposal == FINISHED:
                return Searcher.FINISHED
            if proposal is None:
                return None
            self.trial_index[trial_id] = len(self.planner.proposals) - 1
            k, seed = proposal
            return {"k": k, "seed": seed}

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            index = self.trial_index.get(trial_id)
            if index is None:
                return
            value = None
            if result and not error and not result.get("diverged"):
                raw = result.get(self.metric)
                value = float(raw) if isinstance(raw, int | float) else None
            self.planner.record(index, value)

        def get_state(self) -> dict[str, Any]:
            return {"planner": self.planner.state(), "trial_index": dict(self.trial_index),
                    "metric": self._metric, "mode": self._mode}  # fmt: skip

        def set_state(self, state: dict[str, Any]) -> None:
            self.planner = Planner.from_state(state["planner"])
            self.trial_index = dict(state["trial_index"])
            self._metric, self._mode = state["metric"], state["mode"]

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as f:
                pickle.dump(self.get_state(), f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                self.set_state(pickle.load(f))

    AdaptiveSearcher.__module__ = __name__
    AdaptiveSearcher.__qualname__ = "AdaptiveSearcher"  # pickle finds it through __getattr__
    return AdaptiveSearcher


def __getattr__(name: str) -> Any:
    if name == "AdaptiveSearcher":  # only called while the class is not yet in globals()
        cls = globals()["AdaptiveSearcher"] = _searcher_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stopped_at(fs: Any, experiment: str) -> int | None:
    """Trials an adaptive study will have when its searcher stopped before `num_samples`
    (from the searcher states Tune saved in the experiment folder); None otherwise.
    The service's exit code counts a study as finished at this many trials."""
    planner = saved_planner(fs, experiment)
    return len(planner["proposals"]) if planner and planner.get("finished") else None


def saved_planner(fs: Any, experiment: str) -> dict[str, Any] | None:
    """The latest saved planner state of a study, or None. Chosen by content, the one with the
    most proposals (a study's state only grows): a resumed driver's file can carry an older
    mtime than the previous session's (the same reason the study picks Tune snapshots by content, not name)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
    best: dict[str, Any] | None = None
    for info in infos:
        if not (info.base_name.startswith("searcher-state-") and info.base_name.endswith(".pkl")):
            continue
        try:
            with fs.open_input_file(info.path) as f:
                planner = pickle.loads(f.read())["planner"]
        except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError):
            continue  # a damaged or foreign file says nothing about the study
        if best is None or len(planner["proposals"]) > len(best["proposals"]):
            best = planner
    return best


SWEPT = ("k", "seed")  # the keys the searcher places


def check_space(space: Any) -> tuple[int, Options]:
    """(T, options) for a space the searcher can serve; StudyError naming what is off."""
    from trainables import TrialConfig

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


def make_searcher(plan: Any) -> Any:
    """The adaptive searcher (`AdaptiveSearcher`) for a plan (`study.plan.Plan`); StudyError if
    the space does not fit it."""
    total_steps, options = check_space(plan.space)
    cls = globals().get("AdaptiveSearcher") or __getattr__("AdaptiveSearcher")
    return cls(total_steps, options)
