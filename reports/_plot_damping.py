"""Figure 4: damped Gauss-Newton, accuracy and loss against the damping λ (log axis).

Four panels (test and train accuracy, test and train loss), one line per learning rate: the
mean over seeds with a 95% band, single seeds as faint dots. λ = 0 cannot sit on a log axis;
when present it is a dashed level in the line's colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from ._groups import GAUSS_NEWTON, Group, groups
from ._schema import format_value
from ._stats import mean_ci, summarise
from ._style import (
    NothingToPlot,
    colour,
    constant_description,
    log_axis,
    log_if_wide,
    loss_label,
    pages,
    paper_style,
    save,
    set_title,
)

LINES_PER_PAGE = 7
PANELS = (("test_acc", "test accuracy"), ("train_acc", "train accuracy"),
          ("test_loss", "test"), ("train_loss", "train"))  # fmt: skip
TITLE_KEYS = ("dataset", "model", "loss", "solver", "total_steps", "batch_size")


def plot_damping(
    trials: pd.DataFrame, out: str | Path, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Draw figure 4 from ``load_trials(...)`` for the trials with trainer 'gauss_newton'."""
    lines = groups(trials, GAUSS_NEWTON, drop=("k", "seed", "damping"))
    if not lines:
        raise NothingToPlot("no finished gauss_newton trials")
    dampings = pd.concat([g.trials["damping"] for g in lines])
    if (dampings > 0).sum() == 0 or dampings.nunique() < 2:
        raise NothingToPlot("gauss_newton trials do not sweep the damping λ over positive values")
    paths: list[Path] = []
    for page, chunk in enumerate(pages(lines, LINES_PER_PAGE)):
        with paper_style():
            fig, axes = plt.subplots(2, 2, figsize=(7.4, 5.4), sharex=True, layout="constrained")
            everything = pd.concat([g.trials for g in chunk])
            for i, group in enumerate(chunk):
                for (metric, _), ax in zip(PANELS, axes.flat, strict=True):
                    if metric in group.trials.columns:
                        _draw_line(ax, group.trials, metric, colour(i))
            for (metric, label), ax in zip(PANELS, axes.flat, strict=True):
                log_axis(ax, "x", everything["damping"])
                if "loss" in metric:
                    ax.set_ylabel(loss_label(label, list(everything.get("loss", []))))
                    log_if_wide(ax, everything.get(metric, []))
                else:
                    ax.set_ylabel(label)
            for ax in axes[1]:
                ax.set_xlabel("damping λ (log scale)")
            scope = constant_description(everything, TITLE_KEYS)
            set_title(fig, "Damped Gauss-Newton against λ" + (f" ({scope})" if scope else ""))
            fig.legend(handles=_handles(chunk), loc="outside lower center", ncol=3)
            paths += save(fig, out, formats, page)
    return paths


def _draw_line(ax, trials: pd.DataFrame, metric: str, c: str) -> None:
    positive = trials[trials["damping"] > 0]
    ax.scatter(positive["damping"], positive[metric], s=5, color=c, alpha=0.35, linewidths=0)
    s = summarise(positive, "damping", metric)
    ax.plot(s["key"], s["mean"], "o-", color=c, ms=3.5, linewidth=1.2)
    ax.fill_between(s["key"], s["lo"], s["hi"], color=c, alpha=0.18, linewidth=0)
    mean, _, _ = mean_ci(trials.loc[trials["damping"] == 0, metric])
    if math.isfinite(mean):
        ax.axhline(mean, color=c, linestyle=(0, (5, 2)), linewidth=1.1)


def _handles(chunk: Sequence[Group]) -> list:
    """One entry per line (its label names lr and whatever else varies), then the styles."""
    handles = []
    for i, group in enumerate(chunk):
        label = group.label
        if label == "all trials":
            label = f"lr={format_value(group.key.get('lr', math.nan))}"
        handles.append(Line2D([], [], color=colour(i), marker="o", ms=3.5, label=label))
    handles.append(plt.Rectangle((0, 0), 1, 1, color="0.3", alpha=0.25, label="95% CI over seeds"))
    if any((g.trials["damping"] == 0).any() for g in chunk):
        handles.append(Line2D([], [], color="0.3", linestyle=(0, (5, 2)), label="λ = 0"))
    return handles
