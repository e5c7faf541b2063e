"""Figure 3: training curves as small multiples, a panel per K, feature updates marked.

One page per group of linearised trials (every config key but K, the seed and the one-shot t),
one panel per K (or per one-shot t) on it, sharing both axes, so no curve hides another. Steps
are on a symmetric-log axis (linear below the first record, logarithmic above), so the early
steps, where IL diverges, are as readable as the late ones. In a panel: each seed a thin line,
the mean over seeds a thick one with a 95% bootstrap band (from 3 seeds), circles where the
linearisation point θ_s moves (at multiples of K on the uniform schedule; at t on the one-shot
schedule; where the reported count grows elsewhere; only when there are at most
``MAX_MARKERS``), and the plain-trainer baselines of the same problem in grey.

Every outcome is drawn and counted: running trials as curves; a diverged trial as a red ✕ at
the panel floor at its last step; a trial stopped by an early-stopping scheduler as a grey |
at the floor at its last step (tuning, never a curve). The legend, outside the axes, counts
each outcome over the page; over all pages the counts equal those of the summary's per-trainer
table for linearised trials. A K at which every seed diverged still has its panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._groups import LINEARISED, Group, baselines, groups, infinite_k, matching_plain
from ._load import STOPPED_REASON
from ._schema import format_value, k_label
from ._stats import mean_band, metric_range
from ._style import (
    PLAIN_STYLES,
    NothingToPlot,
    constant_description,
    floor_handle,
    k_colours,
    mark_floor,
    paper_style,
    rank_colours,
    save,
    set_title,
)

MAX_MARKERS = 25
DIVERGED_COLOUR = "#C00000"
STOPPED_COLOUR = "0.45"
STOPPED_MARKER = "|"
PANELS_PER_PAGE = 16
NCOLS = 4
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "total_steps", "batch_size")
ONE_SHOT = "t"  # line kind of the one-shot schedule: one panel per t (one_shot_at)
OUTCOME_LABELS = {  # legend text per outcome; a test reads the counts in parentheses
    "finished": "finished ({n})",
    "running": "running ({n})",
    "diverged": "diverged ({n}), ✕ at its last step",
    "stopped": "stopped by the scheduler ({n}), | at its last step",
}


def plot_training_curves(
    metrics: pd.DataFrame,
    trials: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    metric: str = "test_acc",
) -> list[Path]:
    """Draw figure 3 from ``load(...)`` and ``load_trials(...)``; return the files written."""
    todo = groups(trials, LINEARISED, running=True, include=("diverged", STOPPED_REASON))
    if not todo or metric not in metrics.columns:
        raise NothingToPlot(f"no linearised trial has reported {metric} yet")
    rows = metrics.set_index(["study", "trial_id"]).sort_index()
    paths: list[Path] = []
    page = 0
    for group in todo:
        panels = _panels(group.trials)
        for start in range(0, len(panels), PANELS_PER_PAGE):
            with paper_style():
                fig = _draw(group, panels[start : start + PANELS_PER_PAGE], rows, trials, metric,
                            len(todo) > 1)  # fmt: skip
                paths += save(fig, out, formats, page)
            page += 1
    return paths


def outcome(trials: pd.DataFrame) -> pd.Series:
    """finished, running, diverged or stopped, per trial (the legend's categories)."""
    return trials["exclusion"].map({"": "finished", "in progress": "running",
                                    "diverged": "diverged",
                                    STOPPED_REASON: "stopped"}).fillna("other")  # fmt: skip


def _panels(trials: pd.DataFrame) -> list[tuple[str, float]]:
    kinds, values = _line_keys(trials)
    return sorted(set(zip(kinds, values, strict=True)), key=lambda p: (p[0], p[1]))


def _draw(group: Group, panels, rows: pd.DataFrame, trials: pd.DataFrame, metric: str,
          several: bool):  # fmt: skip
    ncols = min(len(panels), NCOLS)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 2.6, 2.2 * nrows + 0.8),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")  # fmt: skip
    colours = _colours(set(panels))
    kinds, values = _line_keys(group.trials)
    t = group.trials.assign(kind=kinds, value=values, outcome=outcome(group.trials))
    shown = t[t.set_index(["kind", "value"]).index.isin(panels)]
    plain = baselines(matching_plain(trials, group.key, running=True))
    first_step = _first_step(rows, shown, metric)
    plain_curves = [_plain_curve(rows, frame, metric) for _, frame in plain]  # same in every panel
    for ax, (kind, value) in zip(axes.flat, panels, strict=False):
        members = shown[(shown["kind"] == kind) & (shown["value"] == value)]
        curves = members[members["outcome"].isin(["finished", "running"])]
        if len(curves):
            _draw_line(ax, rows, curves, metric, colours[kind, value], kind, value)
        for j, curve in enumerate(plain_curves):
            _draw_plain(ax, curve, j)
        lost = members[members["outcome"] == "diverged"]
        mark_floor(ax, lost["last_step"].astype(float).fillna(0.0), DIVERGED_COLOUR)
        stopped = members[members["outcome"] == "stopped"]
        mark_floor(ax, stopped["last_step"].astype(float).fillna(0.0), STOPPED_COLOUR,
                   marker=STOPPED_MARKER)  # fmt: skip
        counts = members["outcome"].value_counts()
        said = ", ".join(f"{counts[o]} {o}" for o in ("finished", "running", "diverged",
                                                      "stopped") if counts.get(o, 0))  # fmt: skip
        ax.set_title(f"{_label(kind, value)}: {said}" if said else _label(kind, value))
        ax.set_xscale("symlog", linthresh=first_step, linscale=0.4)
    for ax in axes[-1]:
        ax.set_xlabel("training step (log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric.replace("_", " ").replace("acc", "accuracy"))
    if metric.endswith("_acc"):
        axes.flat[0].set_ylim(top=min(axes.flat[0].get_ylim()[1], 1.005))
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    scope = constant_description(shown, TITLE_KEYS)
    where = group.label if several and group.label != "all trials" else ""
    extra = "; ".join(x for x in (where, scope) if x)
    set_title(fig, "Training curves, a panel per K" + (f" ({extra})" if extra else ""))
    fig.legend(handles=_handles(shown, plain), loc="outside right center")
    return fig


def _first_step(rows: pd.DataFrame, trials: pd.DataFrame, metric: str) -> float:
    """The smallest positive step recorded: the symmetric-log axis is linear below it."""
    keys = list(zip(trials["study"], trials["trial_id"], strict=True))
    steps = rows.loc[rows.index.isin(keys), "step"]
    positive = steps[steps > 0]
    return float(positive.min()) if len(positive) else 1.0


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
    if data.empty:
        return
    for _, seed in data.groupby(level=[0, 1]):
        ax.plot(seed["step"], seed[metric], color=c, linewidth=0.5, alpha=0.35)
    curve = _mean_curve(data, metric)
    ax.plot(curve.index, curve["mean"], color=c, linewidth=1.4)
    ax.fill_between(curve.index, curve["lo"], curve["hi"], color=c, alpha=0.18, linewidth=0)
    updates = _update_steps(data, members.iloc[0], kind, value)
    if 0 < len(updates) <= MAX_MARKERS:
        ax.plot(updates, np.interp(updates, curve.index, curve["mean"]), "o", ms=2.8,
                mfc="white", mec=c, mew=0.9)  # fmt: skip


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


def _plain_curve(rows: pd.DataFrame, frame: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """A plain-trainer baseline's mean curve over its seeds (None: nothing reported)."""
    keys = list(zip(frame["study"], frame["trial_id"], strict=True))
    data = rows.loc[rows.index.isin(keys)].dropna(subset=[metric])
    return None if data.empty else _mean_curve(data, metric)


def _draw_plain(ax, curve: pd.DataFrame | None, j: int) -> None:
    if curve is None:
        return
    ax.plot(curve.index, curve["mean"], color="0.45", linewidth=1.0,
            linestyle=PLAIN_STYLES[j % len(PLAIN_STYLES)])  # fmt: skip


def _handles(shown: pd.DataFrame, plain: list[tuple[str, pd.DataFrame]]) -> list:
    grey = "0.3"
    handles: list = [
        Line2D([], [], color=grey, linewidth=1.4, label="mean over seeds"),
        Line2D([], [], color=grey, linewidth=0.5, alpha=0.5, label="one seed"),
        plt.Rectangle((0, 0), 1, 1, color=grey, alpha=0.2, label="95% CI over seeds (≥ 3)"),
        Line2D([], [], color=grey, marker="o", mfc="white", linestyle="none", ms=3.5,
               label=f"feature update\n(shown when ≤ {MAX_MARKERS})"),
    ]  # fmt: skip
    for j, (label, _) in enumerate(plain):
        handles.append(Line2D([], [], color="0.45", label=label,
                              linestyle=PLAIN_STYLES[j % len(PLAIN_STYLES)]))  # fmt: skip
    counts = shown["outcome"].value_counts()
    for name in ("finished", "running"):
        text = OUTCOME_LABELS[name].format(n=int(counts.get(name, 0)))
        handles.append(Line2D([], [], color="none", label=text))
    lost = floor_handle(OUTCOME_LABELS["diverged"].format(n=int(counts.get("diverged", 0))))
    lost.set_color(DIVERGED_COLOUR)
    handles.append(lost)
    stopped = int(counts.get("stopped", 0))
    if stopped:
        mark = floor_handle(OUTCOME_LABELS["stopped"].format(n=stopped), STOPPED_MARKER)
        mark.set_color(STOPPED_COLOUR)
        handles.append(mark)
    return handles
