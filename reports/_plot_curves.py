"""Figure 3: training curves per K, test accuracy against step, feature updates marked.

One panel per group of linearised trials (running trials included, so a study in progress
shows its curves). A line is the mean over seeds at each reported step, with a 95% bootstrap band from 3 seeds.
Circles on a line mark where the linearisation point θ_s moves: at multiples of K on the
uniform schedule; at t, the single linearisation, on the one-shot schedule (whose lines are
one per t); elsewhere where the reported count of updates grows (to the resolution of
``eval_every``). They are drawn only when there are at most ``MAX_MARKERS`` of them, so K=1
(every step) and K=∞ (never) have none. Plain-trainer baselines on the same problem are grey
dash-dotted curves. Diverged trials are red crosses at the floor, at the step they stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._groups import (
    LINEARISED,
    Group,
    baselines,
    diverged_like,
    groups,
    infinite_k,
    matching_plain,
)
from ._schema import format_value, k_label
from ._stats import mean_band, metric_range
from ._style import (
    PLAIN_STYLES,
    NothingToPlot,
    constant_description,
    floor_handle,
    k_colours,
    k_mappable,
    mark_floor,
    pages,
    paper_style,
    rank_colours,
    save,
    set_title,
)

MAX_MARKERS = 25
DIVERGED_COLOUR = "#C00000"  # K of a diverged trial may have no line of its own
MAX_LEGEND_KS = 7  # more finite K than this get a colour bar instead of legend entries
PANELS_PER_PAGE = 6
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "total_steps", "batch_size")
ONE_SHOT = "t"  # line kind of the one-shot schedule: one line per t (one_shot_at)


def plot_training_curves(
    metrics: pd.DataFrame,
    trials: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    metric: str = "test_acc",
) -> list[Path]:
    """Draw figure 3 from ``load(...)`` and ``load_trials(...)``; return the files written."""
    todo = groups(trials, LINEARISED, running=True)
    if not todo or metric not in metrics.columns:
        raise NothingToPlot(f"no linearised trial has reported {metric} yet")
    rows = metrics.set_index(["study", "trial_id"]).sort_index()
    paths: list[Path] = []
    for page, chunk in enumerate(pages(todo, PANELS_PER_PAGE)):
        with paper_style():
            fig = _draw(chunk, rows, trials, metric)
            paths += save(fig, out, formats, page)
    return paths


def _draw(chunk: Sequence[Group], rows: pd.DataFrame, trials: pd.DataFrame, metric: str):
    ncols = min(len(chunk), 3)
    nrows = math.ceil(len(chunk) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 2.0, 3.0 * nrows + 0.6),
                             squeeze=False, sharey=True, layout="constrained")  # fmt: skip
    lines = {(kind, v) for g in chunk for kind, v in zip(*_line_keys(g.trials), strict=True)}
    colours = _colours(lines)
    plain_labels: list = []
    n_lost = 0
    for ax, group in zip(axes.flat, chunk, strict=False):
        lost = diverged_like(trials, group)
        if len(lost) and "last_step" in lost:  # where it blew up, at the floor
            n_lost += mark_floor(ax, lost["last_step"].astype(float).dropna(), DIVERGED_COLOUR)
        kinds, values = _line_keys(group.trials)
        t = group.trials.assign(kind=kinds, value=values)
        for (kind, value), members in t.groupby(["kind", "value"], sort=True):
            _draw_line(ax, rows, members, metric, colours[kind, value], kind, value)
        plain_labels += _draw_plain(ax, rows, trials, group, metric)
        running = int((t["exclusion"] == "in progress").sum()) if "exclusion" in t else 0
        title = group.label if len(chunk) > 1 or running else ""
        ax.set_title(title + (f" ({running} running)" if running else ""))
        ax.set_xlabel("training step")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric.replace("_", " ").replace("acc", "accuracy"))
    for ax in list(axes.flat)[len(chunk) :]:
        ax.set_visible(False)
    scope = constant_description(pd.concat([g.trials for g in chunk]), TITLE_KEYS)
    set_title(fig, "Training curves per K" + (f" ({scope})" if scope else ""))
    finite_ks = sorted(v for kind, v in lines if kind == "K" and math.isfinite(v))
    if len(finite_ks) > MAX_LEGEND_KS:  # many K: a colour bar reads better than a long legend
        bar = fig.colorbar(k_mappable(finite_ks), ax=axes, location="right", shrink=0.8, aspect=30)
        bar.set_label("K (steps between feature updates)")
        lines = {(kind, v) for kind, v in lines if kind != "K" or not math.isfinite(v)}
    handles = _handles(sorted(lines), colours, plain_labels)
    handles.append(floor_handle(f"diverged trial ({n_lost}),\nat its last step"))
    handles[-1].set_color(DIVERGED_COLOUR)
    fig.legend(handles=handles, loc="outside right center")
    return fig


def _line_keys(trials: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """(kind, value) per trial: ('K', K with K ≥ T as ∞), or ('t', one_shot_at) for one-shot."""
    one_shot = trials.get("schedule", pd.Series("", index=trials.index)) == "one_shot"
    values = np.where(one_shot, trials.get("one_shot_at", np.nan), infinite_k(trials))
    return [ONE_SHOT if o else "K" for o in one_shot], values.astype(float)


def _colours(lines: set[tuple[str, float]]) -> dict[tuple[str, float], tuple]:
    """K on a log colour scale (black for ∞); one-shot t by rank."""
    ks = k_colours(v for kind, v in lines if kind == "K")
    ts = rank_colours(v for kind, v in lines if kind == ONE_SHOT)
    return {(kind, v): (ks if kind == "K" else ts)[v] for kind, v in lines}


def _label(kind: str, value: float) -> str:
    return k_label(value) if kind == "K" else f"one-shot, t={format_value(value)}"


def _draw_line(
    ax, rows: pd.DataFrame, members: pd.DataFrame, metric: str, c, kind: str, value: float
) -> None:
    keys = list(zip(members["study"], members["trial_id"], strict=True))
    data = rows.loc[rows.index.isin(keys)].dropna(subset=[metric])
    curve = _mean_curve(data, metric)
    ax.plot(curve.index, curve["mean"], color=c, linewidth=1.2, linestyle=_k_style(value))
    ax.fill_between(curve.index, curve["lo"], curve["hi"], color=c, alpha=0.15, linewidth=0)
    updates = _update_steps(data, members.iloc[0], kind, value)
    if 0 < len(updates) <= MAX_MARKERS:
        ax.plot(updates, np.interp(updates, curve.index, curve["mean"]), "o", ms=2.8,
                mfc="white", mec=c, mew=0.9)  # fmt: skip


def _k_style(k: float) -> str | tuple:
    return (0, (5, 2)) if math.isinf(k) else "-"


def _mean_curve(data: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean over seeds per step with a 95% bootstrap band inside the metric's range (none
    where fewer than 3 seeds report)."""
    bounds = metric_range(metric)
    stats = {step: mean_band(part[metric], bounds) for step, part in data.groupby("step")}
    return pd.DataFrame.from_dict(stats, orient="index", columns=["mean", "lo", "hi"]).sort_index()


def _update_steps(data: pd.DataFrame, trial: pd.Series, kind: str, value: float) -> np.ndarray:
    """Steps where θ_s moves, up to the last reported step (none for K=1 and K=∞)."""
    if data.empty:
        return np.array([])
    last = data["step"].max()
    if kind == ONE_SHOT:
        return np.array([value]) if 0 < value < last else np.array([])
    if math.isinf(value) or value <= 1:
        return np.array([])
    if str(trial.get("schedule", "uniform")) == "uniform":
        return np.arange(value, last + 0.5, value)
    first = data[data.index == data.index[0]].sort_values("step")
    grew = first["feature_updates"].diff().fillna(first["feature_updates"]) > 0
    return first.loc[grew, "step"].to_numpy(float)


def _draw_plain(ax, rows: pd.DataFrame, trials: pd.DataFrame, group: Group, metric: str) -> list:
    labels = []
    for j, (label, frame) in enumerate(baselines(matching_plain(trials, group.key, running=True))):
        keys = list(zip(frame["study"], frame["trial_id"], strict=True))
        data = rows.loc[rows.index.isin(keys)].dropna(subset=[metric])
        if data.empty:
            continue
        curve = _mean_curve(data, metric)
        ax.plot(curve.index, curve["mean"], color="0.45", linewidth=1.1,
                linestyle=PLAIN_STYLES[j % len(PLAIN_STYLES)])  # fmt: skip
        labels.append((j, label))
    return labels


def _handles(lines: list[tuple[str, float]], colours: dict, plain: list) -> list[Line2D]:
    handles = [
        Line2D([], [], color=colours[kind, v], label=_label(kind, v), linestyle=_k_style(v))
        for kind, v in lines
    ]
    handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", linestyle="none", ms=3.5,
                          label=f"feature update\n(shown when ≤ {MAX_MARKERS})"))  # fmt: skip
    handles.append(plt.Rectangle((0, 0), 1, 1, color="0.3", alpha=0.2, label="95% CI over seeds"))
    for j, label in sorted(set(plain)):
        handles.append(Line2D([], [], color="0.45", label=label,
                              linestyle=PLAIN_STYLES[j % len(PLAIN_STYLES)]))  # fmt: skip
    return handles
