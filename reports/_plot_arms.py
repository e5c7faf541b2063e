"""The paper's Fig. 8: each linear model solved to convergence, against K=∞, SGD and Adam at K=1.

Drawn for a study with an IL arm that solves each phase to convergence
(``solve_to_convergence``, where K only caps a phase) and at least one other arm of the same
problem (the same data, model, loss and T). An *arm* is every config key of how the problem was
optimised but the learning rate and the seed (trainer, optimizer, K, momentum, …). Each arm is
shown at its learning rate selected on validation by the tuned view's rule (``_tune``); an arm
run at one learning rate is shown at it. Per arm: train accuracy beside test accuracy, seed by
seed, their means, and the generalisation gap (train − test) between them; a solve-to-
convergence arm's tick says how many feature updates each trial made, which ``arms.csv`` lists
per trial. Diverged trials are ✕ at the floor, counted under their arm.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._groups import LINEARISED
from ._schema import format_value
from ._stability import arm_keys, arm_label, problem_keys, scope
from ._style import (
    NothingToPlot,
    colour,
    constant_description,
    floor_handle,
    mark_floor,
    paper_style,
    save,
    set_title,
)
from ._tune import select

TITLE_KEYS = ("dataset", "model", "loss", "total_steps", "batch_size")
CONVERGE = "solve_to_convergence"
COLUMNS = ["study", "group", "arm", "trainer", "optimizer", CONVERGE, "k", "lr", "lr_note",
           "trial_id", "seed", "diverged", "train_acc", "test_acc", "val_acc", "gap",
           "feature_updates"]  # fmt: skip


def arms_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of each arm at its selected lr, for every problem with a
    solve-to-convergence IL arm and another arm; `feature_updates` is the trial's final N."""
    t = scope(trials)
    if t.empty or CONVERGE not in t or "trainer" not in t:
        return pd.DataFrame(columns=COLUMNS)
    problems, arms = problem_keys(t), arm_keys(t)
    varying = [k for k in problems if t[k].nunique(dropna=False) > 1]
    rows = []
    for _, problem in t.groupby(problems, dropna=False, sort=True):
        converging = (problem["trainer"] == LINEARISED) & problem[CONVERGE].astype(bool)
        arm_groups = list(problem.groupby([*arms, "K"], dropna=False, sort=True))
        if not converging.any() or len(arm_groups) < 2:
            continue
        group = ", ".join(f"{k}={format_value(problem[k].iloc[0])}" for k in varying)
        for _, arm in arm_groups:
            picked, note = _at_selected_lr(arm)
            label = _arm_name(arm.iloc[0], arms)
            for _, trial in picked.iterrows():
                train, test = _f(trial.get("train_acc")), _f(trial.get("test_acc"))
                rows.append({
                    "study": trial["study"], "group": group, "arm": label,
                    "trainer": trial["trainer"], "optimizer": trial.get("optimizer", ""),
                    CONVERGE: bool(trial[CONVERGE]), "k": float(trial["K"]),
                    "lr": _f(trial.get("lr")), "lr_note": note, "trial_id": trial["trial_id"],
                    "seed": trial.get("seed"), "diverged": trial["exclusion"] == "diverged",
                    "train_acc": train, "test_acc": test, "val_acc": _f(trial.get("val_acc")),
                    "gap": train - test, "feature_updates": _f(trial.get("feature_updates")),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _arm_name(trial: pd.Series, arms: Sequence[str]) -> str:
    label = arm_label(trial, arms)
    k = float(trial["K"])
    if trial["trainer"] != LINEARISED:
        return f"{label} (K=1)"
    if bool(trial[CONVERGE]):
        return label + ("" if math.isinf(k) else f" (K cap {format_value(k)})")
    return f"{label}, K={format_value(k)}"


def _at_selected_lr(arm: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The arm's trials at its learning rate: the one run, or the validation pick."""
    lrs = pd.to_numeric(arm["lr"], errors="coerce").dropna().unique()
    if len(lrs) <= 1:
        return arm, "as run"
    pick, row = select(arm, ("lr",))
    if pick is None or pick.empty:
        smallest = arm[np.isclose(arm["lr"].astype(float), min(lrs))]
        return smallest, f"{row.get('note', 'nothing selected')}; smallest lr shown"
    return pick, "selected on validation"


def _f(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def plot_arms(table: pd.DataFrame, out: str | Path, formats: Sequence[str] = ("png",),
              trials: pd.DataFrame | None = None) -> list[Path]:  # fmt: skip
    """Draw ``arms`` from :func:`arms_table`: train beside test accuracy and the gap, per arm."""
    if table.empty:
        raise NothingToPlot("no problem has an IL arm solved to convergence beside another arm")
    paths: list[Path] = []
    for page, (_, part) in enumerate(table.groupby(["study", "group"], sort=True)):
        paths += _page(part, out, formats, page, trials)
    return paths


def _page(part: pd.DataFrame, out, formats, page, trials) -> list[Path]:
    # the arms solved to convergence first (the subject), then IL at fixed K, then plain
    order = part.assign(_lin=part["trainer"] != LINEARISED, _conv=~part[CONVERGE].astype(bool))
    order = order.sort_values(["_lin", "_conv", "trainer", "optimizer", "k"])
    arms = list(dict.fromkeys(order["arm"]))
    rng = np.random.default_rng(0)  # jitter only; fixed so re-rendered files are identical
    with paper_style():
        fig, (acc_ax, gap_ax) = plt.subplots(2, 1, figsize=(1.8 * len(arms) + 2.4, 7.0),
                                             sharex=True, height_ratios=[3, 2],
                                             layout="constrained")  # fmt: skip
        ticks = []
        n_lost = 0
        for x, arm in enumerate(arms):
            rows = part[part["arm"] == arm]
            done, lost = rows[~rows["diverged"]], rows[rows["diverged"]]
            jitter = rng.uniform(-0.06, 0.06, len(done))
            c = colour(x)
            acc_ax.scatter(x - 0.14 + jitter, done["train_acc"], s=16, facecolors="none",
                           edgecolors=c, linewidths=0.9)  # fmt: skip
            acc_ax.scatter(x + 0.14 + jitter, done["test_acc"], s=16, color=c)
            gap_ax.scatter(x + jitter, done["gap"], s=16, color=c)
            if len(done):
                train, test = done["train_acc"].mean(), done["test_acc"].mean()
                acc_ax.hlines([train], x - 0.26, x - 0.02, color=c, lw=1.6)
                acc_ax.hlines([test], x + 0.02, x + 0.26, color=c, lw=1.6)
                acc_ax.annotate("", xy=(x, test), xytext=(x, train),
                                arrowprops={"arrowstyle": "<->", "color": "0.35", "lw": 0.8})  # fmt: skip
                gap_ax.hlines([done["gap"].mean()], x - 0.2, x + 0.2, color=c, lw=1.6)
            if len(lost):
                n_lost += len(lost)
                mark_floor(acc_ax, [x] * len(lost), c)
                mark_floor(gap_ax, [x] * len(lost), c)
            ticks.append(_tick(arm, rows, done, lost))
        gap_ax.set_xticks(range(len(arms)), ticks, fontsize=6.5)
        gap_ax.set_xlim(-0.6, len(arms) - 0.4)
        acc_ax.set_ylabel("final accuracy")
        acc_ax.set_title("train (open) beside test (filled); ↕ the generalisation gap")
        gap_ax.set_ylabel("generalisation gap, train − test accuracy")
        gap_ax.axhline(0.0, color="0.6", lw=0.5)
        gap_ax.set_title("gap per seed, bar at the mean")
        handles = [Line2D([], [], color="0.3", marker="o", mfc="none", ls="none",
                          label="train accuracy, one seed"),
                   Line2D([], [], color="0.3", marker="o", ls="none",
                          label="test accuracy, one seed"),
                   Line2D([], [], color="0.3", lw=1.6, label="mean over seeds"),
                   floor_handle(f"diverged trial, at the floor ({n_lost})")]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncol=4)
        shown = trials if trials is not None and len(trials) else part
        scope_text = constant_description(
            shown[shown["trial_id"].isin(part["trial_id"])] if "trial_id" in shown else shown,
            TITLE_KEYS,
        )
        group = part["group"].iloc[0]
        set_title(fig, "Fig. 8: IL solved to convergence in each phase against the K=∞ and K=1 "
                  "arms, each at its learning rate selected on validation"
                  + (f" — {group}" if group else "") + (f" ({scope_text})" if scope_text else ""))  # fmt: skip
        return save(fig, out, formats, page)


def _tick(arm: str, rows: pd.DataFrame, done: pd.DataFrame, lost: pd.DataFrame) -> str:
    lrs = sorted(set(rows["lr"].dropna()))
    lines = [*textwrap.wrap(arm, 22), "lr " + "/".join(format_value(float(v)) for v in lrs)]
    if rows[CONVERGE].any() and (rows["trainer"] == LINEARISED).any():
        n = rows["feature_updates"].dropna().astype(int)
        if len(n):
            lines.append(f"N = {', '.join(str(v) for v in n)}")
    lines.append(f"{len(done)} seeds" + (f", {len(lost)} diverged" if len(lost) else ""))
    return "\n".join(lines)
