"""Figures against one swept hyperparameter on a log axis: the learning rate, the GN damping λ.

Six panels, as in figure 1: test and train accuracy, test and train loss, and the
generalisation gaps (train − test accuracy, test − train loss). One line per trainer / K /
other config (every key but the swept one and the seed): the mean over seeds with a 95%
bootstrap band from 3 seeds. Diverged trials are crosses at the floor of every panel at their
value of the key, counted in the legend. On the learning-rate figure a ring marks, on each
line, the value that validation accuracy selects (see ``_tune``); test accuracy selects nothing.
A value ≤ 0 (λ = 0) cannot sit on a log axis: it is a dashed level in the line's colour.

The damping figure also draws Gauss-Newton's tuned view (``_tune.gauss_newton_by_damping``):
at each λ the step η picked on validation, in black, on every panel, so train accuracy sits
beside test accuracy; a λ whose tuned train accuracy is more than ``UNDERTRAINED_GAP`` below
the best λ's is ringed ▽ (under-trained: its test accuracy is an optimisation effect), and a λ
where every η diverged is a dotted red vertical line. A jump in test accuracy is a
generalisation effect only between λ that are neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from ._groups import GAUSS_NEWTON, LINEARISED, PLAIN, Group, diverged_like, groups, usable
from ._schema import format_value
from ._stats import mean_band, metric_range, summarise
from ._style import (
    PANELS,
    NothingToPlot,
    colour,
    constant_description,
    floor_handle,
    log_axis,
    log_if_wide,
    loss_label,
    mark_floor,
    pages,
    paper_style,
    save,
    set_title,
)
from ._tune import UNDERTRAINED_GAP, gauss_newton_tuned
from ._tune import select as _select

LINES_PER_PAGE = 7
MIN_VALUES = 3  # a line needs this many distinct values of the key to be a sweep
TRAINER_STYLE = {PLAIN: (0, (6, 2, 1, 2)), LINEARISED: "-", GAUSS_NEWTON: (0, (4, 1.5))}
AXIS_LABEL = {"lr": "learning rate η (log scale)", "damping": "damping λ (log scale)"}
TITLE_KEYS = {  # GN ignores the optimizer; other trainers store GN keys at their defaults
    "lr": ("dataset", "model", "loss", "optimizer", "total_steps", "batch_size"),
    "damping": ("dataset", "model", "loss", "solver", "total_steps", "batch_size"),
}


def sweep_lines(trials: pd.DataFrame, key: str, trainers: Sequence[str]) -> list[Group]:
    """Groups of `trainers` over every key but `key` and the seed with ≥ MIN_VALUES values."""
    lines = []
    for trainer in trainers:
        # diverged trials join their line, so a line on which every trial diverged is counted
        for g in groups(trials, trainer, drop=("seed", key), include=("diverged",)):
            values = g.trials[key]
            g = Group(g.key, g.label, usable(g.trials))
            if pd.to_numeric(values, errors="coerce").nunique() >= MIN_VALUES:
                label = g.label if g.label != "all trials" else ""
                k = g.key.get("k", math.nan)
                if trainer == LINEARISED and "K=" not in label and isinstance(k, float):
                    label = ", ".join(x for x in (f"K={format_value(k)}", label) if x)
                name = trainer if len(trainers) > 1 else ""  # one trainer: the title says it
                text = ", ".join(x for x in (name, label) if x)
                lr = g.key.get("lr", math.nan)
                if not text and key != "lr" and isinstance(lr, float):  # say the line's step
                    text = f"lr={format_value(lr)}"
                text = text or "all trials"
                lines.append(Group(g.key, text, g.trials))
    return lines


def plot_lr(trials: pd.DataFrame, out: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Accuracy, loss and gap against the learning rate: one line per trainer / K."""
    lines = sweep_lines(trials, "lr", (PLAIN, LINEARISED, GAUSS_NEWTON))
    if not lines:
        raise NothingToPlot(f"no trainer / K sweeps the learning rate over ≥ {MIN_VALUES} values")
    return _plot(trials, lines, "lr", out, formats, "Against the learning rate", selected=True)


def plot_damping(
    trials: pd.DataFrame, out: str | Path, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Gauss-Newton against the damping λ: one line per learning rate (and other config), and
    the tuned view, η picked per λ on validation, with its under-trained and diverged λ."""
    lines = sweep_lines(trials, "damping", (GAUSS_NEWTON,))
    if not lines or not any((g.trials["damping"] > 0).any() for g in lines):
        raise NothingToPlot("gauss_newton trials do not sweep the damping λ over positive values")
    table, picks = gauss_newton_tuned(trials)
    tuned = (table, picks) if len(table) else None
    return _plot(trials, lines, "damping", out, formats, "Damped Gauss-Newton against λ",
                 tuned=tuned)  # fmt: skip


TUNED_COLOUR = "black"
UNDER_COLOUR = "#CC79A7"  # not a line colour of the first lines (blue, vermilion)
DIVERGED_LAMBDA = "#C00000"


def _draw_tuned(axes, table: pd.DataFrame, picks: pd.DataFrame) -> tuple[int, int]:
    """η tuned per λ on every panel (train accuracy beside test), under-trained λ ringed with
    ▽, λ where every η diverged as a dotted vertical line. Returns (under-trained, diverged)."""
    done = picks[picks["exclusion"] == ""] if "exclusion" in picks else picks
    positive = done[pd.to_numeric(done["damping"], errors="coerce") > 0]
    under = table[(table["outcome"] == "under-trained") & (table["damping"] > 0)]
    lost = table[(table["outcome"] == "diverged") & (table["damping"] > 0)]
    for (metric, _), ax in zip(PANELS, axes.flat, strict=True):
        if metric not in positive.columns:
            continue
        s = summarise(positive, "damping", metric)
        ax.plot(s["key"], s["mean"], marker="o", color=TUNED_COLOUR, ms=4, linewidth=1.8,
                zorder=5)  # fmt: skip
        ax.fill_between(s["key"], s["lo"], s["hi"], color=TUNED_COLOUR, alpha=0.12, linewidth=0)
        at = s.set_index("key")["mean"].reindex(under["damping"].astype(float)).dropna()
        ax.scatter(at.index, at.to_numpy(), marker="v", s=90, facecolors="none",
                   edgecolors=UNDER_COLOUR, linewidths=1.3, zorder=7)  # fmt: skip
        for lam in lost["damping"].astype(float):
            ax.axvline(lam, color=DIVERGED_LAMBDA, linestyle=(0, (1, 2)), linewidth=1.1)
    return len(under), len(lost)


def _plot(trials, lines, key, out, formats, title, selected=False, tuned=None) -> list[Path]:
    paths: list[Path] = []
    for page, chunk in enumerate(pages(lines, LINES_PER_PAGE)):
        with paper_style():
            fig, axes = plt.subplots(3, 2, figsize=(7.4, 8.4), sharex=True, layout="constrained")
            everything = pd.concat([g.trials for g in chunk])
            handles, n_lost, rings = [], 0, 0
            for i, group in enumerate(chunk):
                lost = diverged_like(trials, group, ("seed", key))
                n_lost += len(lost)
                style = TRAINER_STYLE.get(str(group.key.get("trainer")), "-")
                for (metric, _), ax in zip(PANELS, axes.flat, strict=True):
                    if metric in group.trials.columns:
                        _draw_line(ax, group.trials, key, metric, colour(i), style)
                    positive = lost[pd.to_numeric(lost[key]) > 0]
                    mark_floor(ax, positive[key].astype(float), colour(i))
                if selected:
                    rings += _ring(axes.flat[0], pd.concat([group.trials, lost]), key, colour(i))
                text = group.label + (f" ({len(lost)} diverged)" if len(lost) else "")
                handles.append(Line2D([], [], color=colour(i), marker="o", ms=3.5,
                                      linestyle=style, label=text))  # fmt: skip
            marks = _draw_tuned(axes, *tuned) if tuned is not None else None
            values = pd.to_numeric(pd.concat([everything[key], trials[key]]), errors="coerce")
            for (metric, label), ax in zip(PANELS, axes.flat, strict=True):
                log_axis(ax, "x", values[values > 0])
                if metric in ("test_loss", "train_loss"):
                    ax.set_ylabel(loss_label(label, list(everything.get("loss", []))))
                    log_if_wide(ax, everything.get(metric, []))
                else:
                    ax.set_ylabel(label)
                if metric.endswith("_acc"):
                    ax.set_ylim(top=min(ax.get_ylim()[1], 1.005))
                if metric.endswith("_gap"):
                    ax.axhline(0.0, color="0.6", linewidth=0.6, zorder=0)
            for ax in axes[-1]:
                ax.set_xlabel(AXIS_LABEL.get(key, f"{key} (log scale)"))
            shown = TITLE_KEYS.get(key, TITLE_KEYS["lr"])
            scope = constant_description(everything, tuple(k for k in shown if k != key))
            set_title(fig, title + (f" ({scope})" if scope else ""))
            handles += _style_handles(chunk, key, n_lost, rings)
            if marks is not None:
                handles += _tuned_handles(*marks)
            fig.legend(handles=handles, loc="outside lower center", ncol=2)
            paths += save(fig, out, formats, page)
    return paths


def _draw_line(ax, trials: pd.DataFrame, key: str, metric: str, c: str, style) -> None:
    values = pd.to_numeric(trials[key], errors="coerce")
    positive = trials[values > 0].assign(**{key: values[values > 0]})
    ax.scatter(positive[key], positive[metric], s=5, color=c, alpha=0.35, linewidths=0)
    s = summarise(positive, key, metric)
    ax.plot(s["key"], s["mean"], marker="o", color=c, ms=3.5, linewidth=1.2, linestyle=style)
    ax.fill_between(s["key"], s["lo"], s["hi"], color=c, alpha=0.18, linewidth=0)
    mean, _, _ = mean_band(trials.loc[values <= 0, metric], metric_range(metric))
    if math.isfinite(mean):
        ax.axhline(mean, color=c, linestyle=(0, (5, 2)), linewidth=1.1)


def _ring(ax, cell: pd.DataFrame, key: str, c: str) -> int:
    """Ring the value validation accuracy selects on this line (none without val_acc)."""
    if "val_acc" not in cell or cell["val_acc"].isna().all():
        return 0
    pick, _ = _select(cell, (key,))
    if pick is None or pick.empty:
        return 0
    ax.scatter([float(pick[key].iloc[0])], [pick["test_acc"].mean()], s=80, facecolors="none",
               edgecolors=c, linewidths=1.2, zorder=6)  # fmt: skip
    return 1


def _tuned_handles(n_under: int, n_lost: int) -> list:
    handles = [Line2D([], [], color=TUNED_COLOUR, marker="o", ms=4, linewidth=1.8,
                      label="η tuned per λ on validation")]  # fmt: skip
    handles.append(Line2D([], [], marker="v", ms=8, mfc="none", mec=UNDER_COLOUR,
                          linestyle="none", label=f"under-trained λ ({n_under}): tuned train "
                          f"accuracy > {UNDERTRAINED_GAP * 100:g} points below the best λ's"))  # fmt: skip
    handles.append(Line2D([], [], color=DIVERGED_LAMBDA, linestyle=(0, (1, 2)),
                          label=f"λ where every η diverged ({n_lost})"))  # fmt: skip
    return handles


def _style_handles(chunk: Sequence[Group], key: str, n_lost: int, rings: int) -> list:
    grey = "0.3"
    handles = [plt.Rectangle((0, 0), 1, 1, color=grey, alpha=0.25,
                             label="95% bootstrap CI of the mean (≥ 3 seeds)")]  # fmt: skip
    if rings:
        handles.append(Line2D([], [], marker="o", ms=8, mfc="none", mec=grey, linestyle="none",
                              label=f"{key} selected on validation accuracy"))  # fmt: skip
    if any((pd.to_numeric(g.trials[key], errors="coerce") <= 0).any() for g in chunk):
        handles.append(Line2D([], [], color=grey, linestyle=(0, (5, 2)),
                              label=f"{key} = {format_value(0.0)}"))  # fmt: skip
    handles.append(floor_handle(f"diverged trial ({n_lost}), at the panel floor"))
    return handles
