"""Test accuracy at matched training loss, against the number of feature updates N.

A K=∞ model that has not finished training shows an optimisation gap, not a generalisation
gap. So each trial is read at the first record where its training loss reaches a target, the
same for the whole group: by default the worst final training loss among the group's
non-diverged trials, so every finished trial reaches it and the slowest to train sets the
bar. Left panel: test accuracy there; right: the step at which the target was reached. Trials
that never reach it (a target given by hand, a trial still running) are marked at the floor.
K=∞ (N = 0) cannot sit on a log axis: it is a dashed level, as in figure 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._groups import LINEARISED, Group, groups, is_lazy, n_updates
from ._stats import mean_band, summarise
from ._style import (
    LAZY_STYLE,
    NothingToPlot,
    colour,
    constant_description,
    floor_handle,
    log_axis,
    mark_floor,
    pages,
    paper_style,
    save,
    set_title,
)

GROUPS_PER_PAGE = 5
NEVER_MARKER = "v"  # a trial that never reached the target training loss
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "total_steps", "batch_size")


def matched_train_loss(
    metrics: pd.DataFrame, group_trials: pd.DataFrame, target: float | None = None
) -> tuple[pd.DataFrame, float]:
    """Per trial of one group: test accuracy and step at the first record with training loss
    ≤ target (NaN when never reached), and the target used (default: the worst final one)."""
    if target is None:
        target = float(group_trials["train_loss"].max())
    keys = list(zip(group_trials["study"], group_trials["trial_id"], strict=True))
    rows = metrics.set_index(["study", "trial_id"])
    rows = rows.loc[rows.index.isin(keys)].dropna(subset=["train_loss"]).sort_values("step")
    reached = rows[rows["train_loss"] <= target].groupby(level=[0, 1]).first()
    out = group_trials.set_index(["study", "trial_id"])[["total_steps", "k", "trainer"]].copy()
    out["feature_updates"] = n_updates(group_trials).to_numpy()
    out["N"] = out["feature_updates"]
    out["matched_test_acc"] = reached["test_acc"].reindex(out.index)
    out["matched_step"] = reached["step"].reindex(out.index).astype(float)
    return out.reset_index(), target


def plot_matched_train_loss(
    metrics: pd.DataFrame,
    trials: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    target: float | None = None,
    note: str = "",
) -> list[Path]:
    """Draw the matched-training-loss figure for each group of linearised trials."""
    if "train_loss" not in metrics.columns:
        raise NothingToPlot("no train_loss was recorded")
    todo = [g for g in groups(trials, LINEARISED) if g.trials["train_loss"].notna().any()
            and len(set(n_updates(g.trials))) > 1]  # fmt: skip
    if not todo:
        raise NothingToPlot("no group of finished linearised trials at several K")
    paths: list[Path] = []
    for page, chunk in enumerate(pages(todo, GROUPS_PER_PAGE)):
        with paper_style():
            fig = _draw(chunk, metrics, target, note)
            paths += save(fig, out, formats, page)
    return paths


def _draw(chunk: Sequence[Group], metrics: pd.DataFrame, target: float | None, note: str):
    fig, (acc_ax, step_ax) = plt.subplots(1, 2, figsize=(7.4, 3.6), layout="constrained")
    handles, n_never = [], 0
    everything = pd.concat([g.trials for g in chunk])
    for i, group in enumerate(chunk):
        c = colour(i)
        m, used = matched_train_loss(metrics, group.trials, target)
        lazy = is_lazy(m).to_numpy(bool)
        never = m["matched_test_acc"].isna().to_numpy()
        n_never += int(never.sum())
        on_axis = m[~lazy & ~never & (m["N"] > 0)]
        for ax, col, bounds in ((acc_ax, "matched_test_acc", (0.0, 1.0)),
                                (step_ax, "matched_step", (0.0, math.inf))):  # fmt: skip
            ax.scatter(on_axis["N"], on_axis[col], s=5, color=c, alpha=0.35, linewidths=0)
            s = summarise(on_axis, "N", col)
            ax.fill_between(s["key"], s["lo"], s["hi"], color=c, alpha=0.18, linewidth=0)
            ax.plot(s["key"], s["mean"], "o-", ms=3.5, color=c, linewidth=0.9)
            mean, lo, hi = mean_band(m.loc[lazy & ~never, col], bounds)
            if math.isfinite(mean):
                ax.axhline(mean, color=c, **LAZY_STYLE)
                if math.isfinite(lo):
                    ax.axhspan(lo, hi, color=c, alpha=0.08, linewidth=0)
            lost = m[never]
            mark_floor(ax, np.where(is_lazy(lost), 1.0, lost["N"]), c, left=is_lazy(lost),
                       marker=NEVER_MARKER)  # fmt: skip
        label = f"{group.label}: target train loss {used:.3g}"
        handles.append(Line2D([], [], color=c, marker="o", ms=3.5, label=label))
    for ax in (acc_ax, step_ax):
        log_axis(ax, "x", n_updates(everything))
        ax.set_xlabel("feature updates N (log scale)")
    acc_ax.set_ylabel("test accuracy at matched train loss")
    acc_ax.set_ylim(top=min(acc_ax.get_ylim()[1], 1.005))
    step_ax.set_ylabel("step reaching the target")
    scope = constant_description(everything, TITLE_KEYS)
    extra = "; ".join(x for x in (scope, note) if x)
    set_title(fig, "Test accuracy at matched training loss" + (f" ({extra})" if extra else ""))
    grey = "0.3"
    handles += [
        Line2D([], [], color=grey, label="K=∞ level (N=0)", **LAZY_STYLE),
        plt.Rectangle((0, 0), 1, 1, color=grey, alpha=0.25,
                      label="95% bootstrap CI of the mean (≥ 3 seeds)"),
        floor_handle(f"never reached the target ({n_never}), at the floor", NEVER_MARKER),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=2)
    return fig
