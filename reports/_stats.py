"""Small statistics over seeds: bootstrap bands, t intervals, Welch and F tests, Spearman's rho.

Built on ``scipy.special`` and numpy rather than ``scipy.stats``, whose import alone costs
about a second: reports should start fast.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy.special import fdtrc, stdtr, stdtrit

from ._config import CI_LEVEL

EXACT_SPEARMAN_N = 8  # up to 8! = 40320 orderings
MIN_BAND_SEEDS = 3  # fewer seeds get points only: two values say nothing about a spread
BAND_REPLICATES = 2000  # bootstrap resamples per band; seeded, so a figure redraws the same
BAND_SEED = 0


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take: [0, 1] for accuracies, [0, ∞) for losses, else all reals."""
    if metric.endswith("_acc") or metric.endswith("accuracy"):
        return 0.0, 1.0
    if metric == "acc_gap":  # train − test accuracy
        return -1.0, 1.0
    if metric.endswith("_loss") or metric == "loss":
        return 0.0, math.inf
    return -math.inf, math.inf


def mean_band(
    values: np.ndarray | pd.Series,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    level: float = CI_LEVEL,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and a percentile-bootstrap interval of it.

    Resampling the seeds keeps the interval inside the values' own range (an accuracy band
    never leaves [0, 1]); it is clipped to `bounds` as well. Below MIN_BAND_SEEDS seeds the
    interval is NaN: the figure shows the seeds as points instead.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < MIN_BAND_SEEDS:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(BAND_SEED)
    means = x[rng.integers(0, len(x), size=(BAND_REPLICATES, len(x)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return mean, float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))


def t_quantile(q: float, dof: np.ndarray | float) -> np.ndarray | float:
    """Student-t quantile."""
    return stdtrit(dof, q)


def mean_ci(values: np.ndarray | pd.Series, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and its Student-t interval (NaN with one seed)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def summarise(frame: pd.DataFrame, by: str | list[str], column: str) -> pd.DataFrame:
    """Per value of `by`: n, mean, lo, hi of `column` (rows with NaN `column` left out).

    The band is ``mean_band`` within the metric's range (``metric_range(column)``).
    """
    rows = []
    bounds = metric_range(column)
    for key, part in frame.dropna(subset=[column]).groupby(by, sort=True, dropna=False):
        mean, lo, hi = mean_band(part[column], bounds)
        rows.append({"key": key, "n": len(part), "mean": mean, "lo": lo, "hi": hi})
    out = pd.DataFrame(rows, columns=["key", "n", "mean", "lo", "hi"])
    types = {"n": "int64", "mean": float, "lo": float, "hi": float}
    return out.astype(types | ({"key": float} if out.empty else {}))


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test for equal means (NaN when undefined)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return math.nan
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stdtr(dof, -abs(t)))


def f_test_p(f: float, dof_num: int, dof_den: int) -> float:
    """Upper tail of the F distribution."""
    return float(fdtrc(dof_num, dof_den, f))


def spearman(x: np.ndarray | pd.Series, y: np.ndarray | pd.Series) -> tuple[float, float, int]:
    """(rho, two-sided p-value, n) over the pairs where both are finite; NaN when undefined.

    The p-value is exact (every ordering) up to EXACT_SPEARMAN_N pairs, else from the t
    approximation, as in ``scipy.stats.spearmanr``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan, n
    rx, ry = _ranks(x[ok]), _ranks(y[ok])
    rho = _pearson(rx, ry)
    if n <= EXACT_SPEARMAN_N:
        perms = np.array(list(itertools.permutations(ry)))
        rhos = _pearson_rows(perms, rx)
        return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12)), n
    if abs(rho) >= 1.0:
        return rho, 0.0, n
    t = rho * math.sqrt((n - 2) / (1 - rho**2))
    return rho, float(2 * stdtr(n - 2, -abs(t))), n


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    return pd.Series(v).rank(method="average").to_numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def _pearson_rows(rows: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows, b = rows - rows.mean(axis=1, keepdims=True), b - b.mean()
    return rows @ b / (np.linalg.norm(rows, axis=1) * np.linalg.norm(b))
