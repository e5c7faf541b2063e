"""Where an adaptive study placed its trials: accuracy against N, shaded by proposal order.

Left: the selection metric (validation accuracy, what the searcher read) against the number of
feature updates N on a log axis, one dot per trial, coloured by the order in which trials
started (``started_at`` in trials.parquet: the order the searcher proposed them). K=∞ (N=0)
sits at the left edge, marked "∞". Right: N against that order, so the placement is visible as
a sequence: references, the coarse grid, then the refinements converging on the transition.
Drawn for groups whose K were not a grid (the seeds differ between K), with ≥ 3 distinct N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._errors import NothingToPlot
from ._groups import LINEARISED, Group, groups, n_updates
from ._style import paper_style, save

MIN_DISTINCT_N = 3
ORDER_CMAP = "viridis"


def adaptive_groups(trials: pd.DataFrame) -> list[Group]:
    """Groups of linearised trials placed by a searcher rather than a grid."""
    if "started_at" not in trials.columns or "k" not in trials.columns:
        return []
    out = []
    for g in groups(trials, LINEARISED):
        n = n_updates(g.trials)
        if n.nunique() < MIN_DISTINCT_N:
            continue
        seeds = {frozenset(g.trials.loc[n == v, "seed"]) for v in n.unique()}
        if len(seeds) > 1:  # a grid gives every K the same seeds
            out.append(g)
    return out


def plot_adaptive(
    trials: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    metric: str = "val_acc",
) -> list[Path]:
    """One page per adaptive group; NothingToPlot when the study has none."""
    todo = adaptive_groups(trials)
    if not todo:
        raise NothingToPlot("no adaptively placed K (a grid, or fewer than 3 distinct N)")
    if metric not in trials.columns:
        raise NothingToPlot(f"no {metric} column: the searcher's metric is not in the results")
    written: list[Path] = []
    with paper_style():
        for page, g in enumerate(todo):
            written += save(_figure(g, metric), out, formats, page=page)
    return written


def _figure(group: Group, metric: str) -> plt.Figure:
    t = group.trials.assign(_n=n_updates(group.trials).to_numpy(float))
    t = t.sort_values("started_at", kind="stable").reset_index(drop=True)
    order = np.arange(1, len(t) + 1)
    finite = t["_n"] > 0
    left = 0.5 * float(t.loc[finite, "_n"].min()) if finite.any() else 0.5
    x = np.where(finite, t["_n"], left)  # K=∞ at the left edge of the log axis
    fig, (ax, seq) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    dots = ax.scatter(x, t[metric], c=order, cmap=ORDER_CMAP, s=28, edgecolors="k",
                      linewidths=0.3, zorder=3)  # fmt: skip
    means = t.groupby("_n")[metric].mean()
    mx = np.where(means.index > 0, means.index, left)
    ax.plot(mx, means.to_numpy(), color="0.6", lw=1, zorder=2, label="mean over seeds")
    ax.set_xscale("log")
    ax.set_xlabel("feature updates N (log; ∞ marks K=∞, N=0)")
    ax.set_ylabel(metric)
    ax.legend(loc="lower right", fontsize="small")
    ax.annotate("∞", (left, ax.get_ylim()[0]), textcoords="offset points", xytext=(0, 4),
                ha="center", fontsize="small")  # fmt: skip
    seq.scatter(order, x, c=order, cmap=ORDER_CMAP, s=22, edgecolors="k", linewidths=0.3)
    seq.plot(order, x, color="0.75", lw=0.8, zorder=0)
    seq.set_yscale("log")
    seq.set_xlabel("proposal order (trial start)")
    seq.set_ylabel("N of the proposed trial")
    bar = fig.colorbar(dots, ax=[ax, seq], pad=0.02)
    bar.set_label("proposal order")
    title = group.label if group.label and group.label != "all trials" else ""
    total = t["total_steps"].iloc[0] if "total_steps" in t else math.nan
    fig.suptitle(f"adaptive placement of K: {len(t)} trials, T = {total:g}"
                 + (f" — {title}" if title else ""))  # fmt: skip
    return fig
