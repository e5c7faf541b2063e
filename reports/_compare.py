"""A non-uniform schedule against the uniform one at matched N: a uniform schedule at the same N
is the reference of a non-uniform one.

For every group on another schedule (geometric: dense early, sparse late) whose config, but
for the schedule keys, also ran on the uniform schedule, each of its N is compared with the
uniform curve at that N: the uniform mean at that very N when it was run, else interpolated
linearly in ln N between the two nearest uniform N (never extrapolated beyond them).
"""

from __future__ import annotations

import math

import pandas as pd

from ._groups import LINEARISED, _same_key, groups, is_lazy, n_updates
from ._schema import SCHEDULE_KEYS
from ._stats import mean_band

COLUMNS = ["study", "group", "schedule", "N", "seeds", "acc", "acc_lo", "acc_hi",
           "uniform_acc", "uniform_at", "difference"]  # fmt: skip


def schedule_comparison(trials: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per (non-uniform group, N): its mean `metric`, the uniform one at that N, Δ."""
    rows = []
    everything = groups(trials, LINEARISED)
    for group in everything:
        schedule = str(group.key.get("schedule", "uniform"))
        if schedule in ("uniform", "one_shot"):  # one-shot's N is t, a different axis
            continue
        uniform = [g for g in everything if g.key.get("schedule") == "uniform"
                   and not _same_key(g.trials.head(1), group.key, SCHEDULE_KEYS).empty]  # fmt: skip
        if not uniform:
            continue
        ref = uniform[0].trials.assign(N=n_updates(uniform[0].trials))
        ref = ref[~is_lazy(ref) & (ref["N"] > 0)].groupby("N")[metric].mean()
        own = group.trials.assign(N=n_updates(group.trials))
        for n, part in own[~is_lazy(own) & (own["N"] > 0)].groupby("N"):
            mean, lo, hi = mean_band(part[metric], (0.0, 1.0))
            at, value = _uniform_at(ref, float(n))
            rows.append({"study": group.key["study"], "group": group.label,
                         "schedule": schedule, "N": float(n), "seeds": len(part), "acc": mean,
                         "acc_lo": lo, "acc_hi": hi, "uniform_acc": value, "uniform_at": at,
                         "difference": mean - value})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _uniform_at(ref: pd.Series, n: float) -> tuple[str, float]:
    """('same N' | 'interpolated' | 'outside', value) of the uniform means `ref` at N = n."""
    if n in ref.index:
        return "same N", float(ref.loc[n])
    below, above = ref.index[ref.index < n], ref.index[ref.index > n]
    if not len(below) or not len(above):
        return "outside the uniform N range", math.nan
    a, b = float(below.max()), float(above.min())
    w = (math.log(n) - math.log(a)) / (math.log(b) - math.log(a))
    return f"interpolated in ln N between N={a:g} and {b:g}", float(
        (1 - w) * ref.loc[a] + w * ref.loc[b]
    )
