"""Fit test accuracy against the number of feature updates N, with a bootstrap over seeds.

Model (saturating in log N, levels fixed from the group's reference trials):

    acc(N) = a_inf + (a_1 − a_inf) · σ(s · (ln N − ln N₅₀)),   σ(z) = 1 / (1 + e^(−z))

- a_inf is the mean over seeds of the K=∞ trials (N = 0) and a_1 that of the K=1 trials
  (N = T − 1): the two limits the paper compares, measured rather than fitted. A group on another
  schedule (geometric, one-shot) that lacks one takes it from the same config's other-schedule
  trials, and says so in ``levels_from``.
- (ln N₅₀, ln s) are fitted by least squares (``scipy.optimize.least_squares``) to the
  individual trials with 0 < N and K ≠ 1; s > 0, so acc moves monotonically from a_inf to a_1.
- N_q, the number of feature updates that recovers a fraction q of the gap, solves
  σ(s(ln N_q − ln N₅₀)) = q:  N_q = N₅₀ · (q / (1 − q))^(1/s).  N₅₀ is N_q at q = ½.
- Confidence intervals: resample trials (seeds) with replacement within each K, references
  included, recompute the levels and refit; percentile intervals over the replicates.

A group that cannot be fitted gets ``fit_ok = False`` and a ``reason``; no number is guessed.
Reasons: a missing level; fewer than three distinct N; levels that do not differ (Welch
t-test); a fit that fails, or explains the points no better than their mean (F-test); or
both N₅₀ and N₉₀ outside the sampled N range (the data do not bracket the transition).
Thresholds inside the data. N₅₀, N₉₀ and every bound of their intervals are reported only
inside the sampled N range, ``[n_min, n_max]`` (the smallest and largest N of the fitted
points). A value outside is *censored*: its column is NaN and its flag column says where it
lies, ``< N_min`` or ``> N_max`` (flags ``n50_flag``, ``n50_lo_flag``, ``n50_hi_flag``,
``n90_flag``, ``n90_lo_flag``, ``n90_hi_flag``; empty when the value is inside or was never
estimated). Figures draw an arrow there, never a number. ``n50_param`` is the fitted curve's
location parameter, kept only to redraw the curve: it is no reported threshold and may lie
outside the data. A rejected fit (any reason above) reports no threshold at all; figures draw
its raw means with bootstrap bands over seeds. The data are never narrowed to make a fit
converge.

Diverged trials are not points of the fit (they have no final accuracy); ``n_diverged`` and
``diverged_k`` count the group's, and the note says the fit was made without them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ._config import CI_LEVEL, DEFAULT_BOOTSTRAP
from ._groups import (
    LINEARISED,
    Group,
    borrowed_references,
    diverged_like,
    groups,
    infinite_k,
    is_lazy,
    is_sgd_limit,
    n_updates,
    sampled_keys,
)
from ._schema import format_value
from ._stats import f_test_p, welch_p

MODEL = "acc = a_inf + (a_1 - a_inf) * sigmoid(s * (ln N - ln N50)); a_inf, a_1 from K=inf, K=1"
MIN_DISTINCT_N = 3  # two free parameters need at least three distinct N to be over-determined
ALPHA = 0.05  # levels must differ, and the curve must beat a flat mean, at this level
LOG_SLOPE_BOUNDS = (math.log(0.05), math.log(50.0))
PARAMS = ("a_inf", "a_1", "n50", "slope", "n90")
THRESHOLDS = ("n50", "n90")
BELOW, ABOVE = "< N_min", "> N_max"  # a censored threshold or bound: where it lies
FLAGS = tuple(f"{name}{s}_flag" for name in THRESHOLDS for s in ("", "_lo", "_hi"))


def sigmoid_model(n: np.ndarray, a_inf: float, a_1: float, n50: float, slope: float) -> np.ndarray:
    """acc(N) of the model above; N = 0 gives a_inf."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        z = slope * (np.log(n) - math.log(n50))
        return a_inf + (a_1 - a_inf) / (1.0 + np.exp(-z))


def n_at_fraction(n50: float, slope: float, q: float) -> float:
    """N_q: feature updates that recover a fraction q of the gap between the levels."""
    return n50 * (q / (1.0 - q)) ** (1.0 / slope)


def fit_feature_updates(
    trials: pd.DataFrame,
    metric: str = "test_acc",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """One row per group of linearised trials at several K: levels, N₅₀, slope, N₉₀, CIs, or
    why not.

    `trials` is ``load_trials(...)`` (or the metrics rows of ``load(...)``, reduced here).
    """
    trials = _as_trials(trials)
    # a group at one N is no curve (an lr sweep at K=100): nothing to fit, no row; N, not K,
    # since a one-shot sweep stores K=∞ for every t
    todo = [g for g in groups(trials, LINEARISED) if len(set(n_updates(g.trials))) > 1]
    if progress and todo:
        progress(f"fitting {len(todo)} group{'s' * (len(todo) > 1)} (bootstrap {n_boot})…")
    rng = np.random.default_rng(seed)
    sampled = [k for k in sampled_keys(trials) if k in trials.columns]
    rows = []
    for g in todo:
        mixed = [k for k in sampled if g.trials[k].nunique() > 1]
        if mixed:  # a searcher's trials at many lr: one curve of them would mix lr with N
            row = _fit_group(g, g.trials.iloc[:0], "", metric, 0, rng, fit=False)
            why = (f"{', '.join(mixed)} sampled by a searcher varies along the curve: "
                   "fitted only per K at the validation-selected value (the tuned view)")  # fmt: skip
            rows.append(row | {"reason": why})
            continue
        row = _fit_group(g, *borrowed_references(trials, g), metric, n_boot, rng)
        if g.key.get("schedule") == "one_shot" and row["reason"].startswith("no K=1"):
            row["reason"] += " (for one-shot: a trial at t = T, or a plain run of the same config)"
        rows.append(_note_diverged(row, diverged_like(trials, g)))
    return pd.DataFrame(rows, columns=_columns(todo))


def _note_diverged(row: dict, lost: pd.DataFrame) -> dict:
    """Count the group's diverged trials and, on a fit, say it was made without them."""
    row["n_diverged"] = len(lost)
    ks = sorted(set(infinite_k(lost))) if len(lost) else []
    row["diverged_k"] = ", ".join(format_value(float(k)) for k in ks)
    if len(lost) and row.get("fit_ok"):
        note = (f"fitted without {len(lost)} diverged trial{'s' * (len(lost) > 1)} "
                f"(K = {row['diverged_k']})")  # fmt: skip
        row["reason"] = "; ".join(r for r in (row.get("reason", ""), note) if r)
    return row


def _as_trials(frame: pd.DataFrame) -> pd.DataFrame:
    if "usable" in frame.columns or "step" not in frame.columns:
        return frame
    from ._load import _trial_table  # metrics rows: reduce to one row per trial

    return _trial_table(frame, None)


def _columns(todo: list[Group]) -> list[str]:
    keys = list(dict.fromkeys(k for g in todo for k in g.key))
    stats = [f"{p}{s}" for p in PARAMS for s in ("", "_lo", "_hi")]
    return ["group", *keys, "metric", "fit_model", "n_trials", "n_points", "n_distinct",
            "n_min", "n_max", *stats, *FLAGS, "n50_param", "rmse", "n_boot", "n_boot_ok", "levels_from",
            "n_diverged", "diverged_k", "fit_ok", "reason"]  # fmt: skip


# ---- one group ----------------------------------------------------------------------------
def _fit_group(
    group: Group,
    borrowed: pd.DataFrame,
    borrowed_note: str,
    metric: str,
    n_boot: int,
    rng: np.random.Generator,
    fit: bool = True,
) -> dict:
    """Fit one group; `borrowed` are reference trials from its other-schedule siblings.

    With `fit` False only the counts and levels are filled in (the caller says why not).
    """
    t = pd.concat([group.trials, borrowed]).dropna(subset=[metric])
    lazy, sgd = is_lazy(t).to_numpy(bool), is_sgd_limit(t).to_numpy(bool)
    n = n_updates(t).to_numpy(float)
    points = ~lazy & ~sgd & (n > 0)
    row = {"group": group.label, **group.key, "metric": metric, "fit_model": MODEL,
           "n_trials": len(t), "n_points": int(points.sum()),
           "n_distinct": len(np.unique(n[points])), "n_boot": 0, "n_boot_ok": 0,
           "fit_ok": False, "reason": "", "levels_from": borrowed_note or "group",
           **dict.fromkeys(FLAGS, "")}  # fmt: skip
    if points.any():
        row |= {"n_min": float(n[points].min()), "n_max": float(n[points].max())}
    y = t[metric].to_numpy(float)
    y_inf, y_1 = y[lazy], y[sgd]
    if len(y_inf):
        row["a_inf"] = float(y_inf.mean())
    if len(y_1):
        row["a_1"] = float(y_1.mean())
    reason = _unfittable(y_inf, y_1, row["n_distinct"]) if fit else "not fitted"
    if reason:
        return row | {"reason": reason}
    x, yp = np.log(n[points]), y[points]
    estimate = _fit(x, yp, y_inf.mean(), y_1.mean())
    if isinstance(estimate, str):
        return row | {"reason": estimate}
    log_n50, slope = estimate
    residual = yp - sigmoid_model(n[points], y_inf.mean(), y_1.mean(), math.exp(log_n50), slope)
    junk = _no_better_than_mean(yp, residual)
    if junk:
        return row | {"reason": junk}
    n50, n90 = math.exp(log_n50), n_at_fraction(math.exp(log_n50), slope, 0.9)
    inside = {name: row["n_min"] <= v <= row["n_max"] for name, v in (("n50", n50), ("n90", n90))}
    sampled = f"[{row['n_min']:g}, {row['n_max']:g}]"
    if not any(inside.values()):  # no threshold number: the direction is in the flags
        flags = {f"{k}_flag": BELOW if v < row["n_min"] else ABOVE
                 for k, v in (("n50", n50), ("n90", n90))}  # fmt: skip
        return row | flags | {"reason": "N₅₀ and N₉₀ both lie outside the sampled N range "
                              f"{sampled}: the data do not bracket the transition"}  # fmt: skip
    row |= {"n50": n50, "n50_param": n50, "slope": slope, "fit_ok": True, "n90": n90,
            "rmse": float(np.sqrt(np.mean(residual**2)))}  # fmt: skip
    cells = [lazy, sgd, *(points & (n == v) for v in np.unique(n[points]))]
    row |= _bootstrap(y, n, cells, estimate, n_boot, rng)
    row |= censor(row)
    single = [name for name, ys in (("K=∞", y_inf), ("K=1", y_1)) if len(ys) == 1]
    if single and row.get("n_boot_ok"):
        note = f"{' and '.join(single)} level from a single trial, so its spread is not in the CIs"
        row["reason"] = "; ".join(r for r in (row["reason"], note) if r)
    return row


def censor(row: dict) -> dict:
    """NaN and a flag for every threshold or CI bound outside ``[n_min, n_max]``; the reason
    says which point estimates were censored (the bounds say so in their flags)."""
    lo_n, hi_n = row.get("n_min", math.nan), row.get("n_max", math.nan)
    out: dict = {flag: "" for flag in FLAGS}
    notes = []
    sampled = f"[{lo_n:g}, {hi_n:g}]"
    for name in THRESHOLDS:
        for suffix in ("", "_lo", "_hi"):
            value = row.get(f"{name}{suffix}", math.nan)
            if value is None or not np.isfinite(value):
                continue
            where = BELOW if value < lo_n else ABOVE if value > hi_n else ""
            if not where:
                continue
            out[f"{name}{suffix}"] = math.nan
            out[f"{name}{suffix}_flag"] = where
            if not suffix:
                label = {"n50": "N₅₀", "n90": "N₉₀"}[name]
                side = "below" if where == BELOW else "above"
                notes.append(f"{label} lies {side} the sampled N range {sampled}, so it is not "
                             "reported" + ("; the transition starts below one feature update"
                                           if side == "below" and lo_n <= 1 else ""))  # fmt: skip
    bounds = [f for f in FLAGS if out[f] and not f.endswith(("n50_flag", "n90_flag"))]
    if bounds:
        notes.append("CI bounds beyond the sampled N are censored ("
                     + ", ".join(f"{f[:-5]} {out[f]}" for f in bounds) + ")")  # fmt: skip
    if notes:
        out["reason"] = "; ".join(r for r in (row.get("reason", ""), *notes) if r)
    return out


def short_reason(reason: str, width: int = 64) -> str:
    """A failed fit's reason cut for a legend: the clause before ':', no parentheses."""
    head = re.sub(r"\s*\([^)]*\)", "", str(reason).split(":")[0]).strip()
    return head if len(head) <= width else head[: head.rfind(" ", 0, width)] + "…"


def _unfittable(y_inf: np.ndarray, y_1: np.ndarray, n_distinct: int) -> str:
    """Why a group cannot be fitted, or ''."""
    if not len(y_inf):
        return "no K=∞ trial in this group: the lower level a_inf is unknown"
    if not len(y_1):
        return "no K=1 trial in this group: the upper level a_1 is unknown"
    if n_distinct < MIN_DISTINCT_N:
        return f"only {n_distinct} distinct N between K=1 and K=∞ (need ≥ {MIN_DISTINCT_N})"
    gap = y_1.mean() - y_inf.mean()
    if gap == 0:
        return "K=1 and K=∞ levels are equal: there is no gap to recover"
    if len(y_inf) > 1 and len(y_1) > 1 and (y_inf.var() > 0 or y_1.var() > 0):
        p = welch_p(y_1, y_inf)
        if not p < ALPHA:
            return f"K=1 and K=∞ levels do not differ (gap {gap:.3g}, Welch t-test p = {p:.2g})"
    return ""


def _no_better_than_mean(y: np.ndarray, residual: np.ndarray) -> str:
    """Why the fitted curve is junk (it explains the points no better than their mean), or ''."""
    rss, rss_mean, dof = float(residual @ residual), float(((y - y.mean()) ** 2).sum()), len(y) - 2
    if dof < 1 or rss_mean == 0:
        return ""
    f = (rss_mean - rss) / (rss / dof) if rss > 0 else math.inf
    if f <= 0:  # an F below zero is no statistic to print: the curve is simply worse
        return "the fitted curve fits the points worse than their mean: no transition in the data"
    p = f_test_p(f, 1, dof)
    if p < ALPHA:
        return ""
    return (f"the fitted curve explains the points no better than their mean (F = {f:.2g}, "
            f"p = {p:.2g}): no transition in the data")  # fmt: skip


def _fit(
    x: np.ndarray, y: np.ndarray, a_inf: float, a_1: float, start: tuple[float, float] | None = None
) -> tuple[float, float] | str:
    """Least-squares (ln N₅₀, s) for fixed levels; a string says why the fit failed."""
    if a_1 == a_inf:
        return "K=1 and K=∞ levels are equal"
    lo, hi = x.min() - math.log(1e3), x.max() + math.log(1e3)
    if start is None:
        start = (_midpoint_guess(x, y, a_inf, a_1), 1.0)
    theta0 = np.array([np.clip(start[0], lo, hi), np.clip(math.log(start[1]), *LOG_SLOPE_BOUNDS)])

    gap = a_1 - a_inf

    def residual(theta: np.ndarray) -> np.ndarray:  # theta = (ln N50, ln s)
        return a_inf + gap * _expit(math.exp(theta[1]) * (x - theta[0])) - y

    def jacobian(theta: np.ndarray) -> np.ndarray:  # analytic: half the calls of differencing
        slope = math.exp(theta[1])
        sig = _expit(slope * (x - theta[0]))
        dz = gap * sig * (1 - sig)
        return np.column_stack([-slope * dz, slope * (x - theta[0]) * dz])

    try:
        result = least_squares(residual, theta0, jac=jacobian,
                               bounds=([lo, LOG_SLOPE_BOUNDS[0]], [hi, LOG_SLOPE_BOUNDS[1]]))  # fmt: skip
    except (ValueError, np.linalg.LinAlgError) as exc:
        return f"least squares failed: {exc}"
    if not result.success or not np.all(np.isfinite(result.x)):
        return f"least squares did not converge: {result.message}"
    slope = math.exp(result.x[1])
    if math.isclose(result.x[1], LOG_SLOPE_BOUNDS[0], abs_tol=1e-6):
        return f"slope hit its lower bound ({slope:.3g}): no saturating transition in the data"
    return float(result.x[0]), slope


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _midpoint_guess(x: np.ndarray, y: np.ndarray, a_inf: float, a_1: float) -> float:
    """ln N where the per-N means cross halfway between the levels (else the middle of x)."""
    order = np.unique(x)
    means = np.array([y[x == v].mean() for v in order])
    frac = (means - a_inf) / (a_1 - a_inf)
    above = np.nonzero(frac >= 0.5)[0]
    return float(order[above[0]]) if len(above) else float(order.mean())


def _bootstrap(
    y: np.ndarray,
    n: np.ndarray,
    cells: list[np.ndarray],
    estimate: tuple[float, float],
    n_boot: int,
    rng: np.random.Generator,
) -> dict:
    """Percentile CIs from resampling trials within each cell: K=∞, K=1, then each N (≡ K).

    `cells` are boolean masks over the trials; the first two are the reference levels.
    """
    index = [np.nonzero(mask)[0] for mask in cells]
    if n_boot <= 0:
        return {}
    if max(len(i) for i in index) < 2:
        return {"reason": "one seed per K: no bootstrap CI"}
    draws = []
    for _ in range(n_boot):
        picks = [rng.choice(i, size=len(i), replace=True) for i in index]
        a_inf, a_1 = y[picks[0]].mean(), y[picks[1]].mean()
        pick = np.concatenate(picks[2:])
        if len(np.unique(n[pick])) < MIN_DISTINCT_N:
            continue
        fit = _fit(np.log(n[pick]), y[pick], a_inf, a_1, start=estimate)
        if isinstance(fit, str):
            continue
        n50 = math.exp(fit[0])
        draws.append((a_inf, a_1, n50, fit[1], n_at_fraction(n50, fit[1], 0.9)))
    out: dict = {"n_boot": n_boot, "n_boot_ok": len(draws)}
    if len(draws) < max(10, n_boot // 2):
        return out | {"reason": f"only {len(draws)} of {n_boot} bootstrap refits succeeded: no CI"}
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = np.percentile(np.array(draws), [tail, 100 - tail], axis=0)
    for i, name in enumerate(PARAMS):
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo[i]), float(hi[i])
    return out
