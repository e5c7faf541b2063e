"""The adaptive searcher's maths: N ↔ K for the uniform schedule, the acc(N) fit, the
bootstrap of its thresholds, and the next design point. Plain Python and NumPy.

    acc(N) = a_inf + (a_1 − a_inf) · σ(s · (ln N − ln N₅₀)),   N = ⌈T/K⌉ − 1 (uniform schedule)

is the report's model (reports/_fit.py), refitted here without importing reports; the rules
that use it are in `study.plan.adaptive_planner`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

INF = "inf"  # the config value of K = ∞
QUANTILES = (0.5, 0.9)  # N₅₀ and N₉₀
CI_LEVEL = 0.95  # percentile bootstrap interval, as the report's
MIN_DISTINCT_N = 3  # two fitted parameters need three distinct N to be over-determined
LOG_SLOPE_BOUNDS = (math.log(0.05), math.log(50.0))  # the report's bounds on s


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
