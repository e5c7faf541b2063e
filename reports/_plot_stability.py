"""Issue 21's figures: lr·λ_max and the feature-update gap over training, and the K × lr map.

``stability``: one row of panels per K (and per reference arm), each trial a line. Left,
lr·λ_max over the step (linear axis; the y axis turns logarithmic when the values span more than
20×, down to 1e-3 of the edge) with the edge lr·λ = 2: the latest measured value as a step line,
a dot at each record that measured one (its largest since the previous record); for Adam and Gauss-Newton, whose lr·λ is undefined, λ_max itself
on its own axis, said so in the panel. Right, the loss jump at each feature update (network
minus linear model) in units of the trial's initial training loss, with the bar of the
classification (``_stability.GAP_FRACTION``). Shown are the learning rate selected on
validation at that K and the next larger one of the grid (the tuned view); without a tuned view,
every learning rate run. ✕ marks where a diverged trial stopped, on its curve.

``stability_map``: the K × lr grid of each group of IL trials, each cell the seeds that trained
over those run and their mean validation accuracy (colour and number); the reference arms
(plain, Gauss-Newton) in a strip below at their own learning rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from ._groups import LINEARISED
from ._schema import format_value
from ._stability import (
    EDGE,
    GAP_FRACTION,
    LR_SHARPNESS,
    LR_SHARPNESS_MAX,
    SHARPNESS,
    Records,
    arm_keys,
    arm_label,
    gap_series,
    initial_loss,
    problem_keys,
    scope,
    series,
)
from ._style import (
    OKABE_ITO,
    NothingToPlot,
    constant_description,
    floor_handle,
    log_if_wide,
    mark_floor,
    paper_style,
    rank_colours,
    save,
    set_title,
)
from ._tune import Tuning

ROWS_PER_PAGE = 6
TITLE_KEYS = ("dataset", "model", "loss", "total_steps", "batch_size")
SELECTED_STYLE = {"color": OKABE_ITO[0], "linestyle": "-"}
NEXT_STYLE = {"color": OKABE_ITO[1], "linestyle": (0, (4, 1.5))}
UNPICKED_STYLE = {"color": "0.35", "linestyle": "-"}  # no lr selectable at this K
SYMLOG_ABOVE = 10.0  # a gap axis whose values pass this many initial losses turns symmetric-log
FLOOR_FRACTION = 1e-3  # the lowest lr·λ a log axis shows, as a fraction of the edge


# ---- stability over training ---------------------------------------------------------------
def plot_stability(
    metrics: pd.DataFrame,
    trials: pd.DataFrame,
    phases: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    tuning: Tuning | None = None,
) -> list[Path]:
    """Draw ``stability``: lr·λ_max (or λ_max) and the feature-update gap per K over the step."""
    from ._stability import recorded, why_not_recorded

    if not recorded(metrics, phases):
        raise NothingToPlot(why_not_recorded(metrics))
    sections = _sections(scope(trials))
    if not sections:
        raise NothingToPlot("no trial finished or diverged yet")
    paths: list[Path] = []
    records = Records(metrics, phases)
    page = 0
    for title, rows in sections:
        for start in range(0, len(rows), ROWS_PER_PAGE):
            chunk = rows[start : start + ROWS_PER_PAGE]
            paths += _stability_page(records, title, chunk, tuning, out, formats, page)
            page += 1
    return paths


def _sections(t: pd.DataFrame) -> list[tuple[str, list[tuple[str, pd.DataFrame]]]]:
    """Per problem and IL arm: (title, [(row label, trials of the row, every lr)])."""
    if t.empty or "trainer" not in t:
        return []
    problems, arms = problem_keys(t), arm_keys(t)
    varying = [k for k in problems if t[k].nunique(dropna=False) > 1]
    out = []
    for _, part in t.groupby(problems, dropna=False, sort=True):
        head = ", ".join(f"{k}={format_value(part[k].iloc[0])}" for k in varying)
        lin, refs = part[part["trainer"] == LINEARISED], part[part["trainer"] != LINEARISED]
        il_arms = [f for _, f in lin.groupby(arms, dropna=False, sort=True)] if len(lin) else []
        ref_rows = [(arm_label(f.iloc[0], arms), f)
                    for _, f in refs.groupby(arms, dropna=False, sort=True)] if len(refs) else []  # fmt: skip
        for arm in il_arms or [lin]:
            label = arm_label(arm.iloc[0], arms) if len(arm) else ""
            rows = [(f"{label}, K={format_value(float(k))}", f)
                    for k, f in arm.groupby("K", sort=True)]  # fmt: skip
            if rows or ref_rows:
                out.append((", ".join(x for x in (head, label if len(il_arms) > 1 else "") if x),
                            rows + ref_rows))  # fmt: skip
    return out


def selection(tuning: Tuning | None, row: pd.DataFrame) -> dict | None:
    """The row of ``selected.csv`` for the cell `row` (one K or reference arm, every lr), or
    None when the tuned view did not tune the learning rate there."""
    if tuning is None or tuning.refused or "lr" not in tuning.keys or tuning.selected.empty:
        return None
    sel = tuning.selected
    first = row.iloc[0]
    shared = [c for c in sel.columns if c in _config_cols(row) and c not in (*tuning.keys, "seed")]
    mask = np.ones(len(sel), dtype=bool)
    for col in shared:
        value = first[col]
        if isinstance(value, float) and math.isnan(value):
            mask &= sel[col].isna().to_numpy()
        elif isinstance(value, float | int | np.number) and not isinstance(value, bool):
            mask &= np.isclose(pd.to_numeric(sel[col], errors="coerce"), float(value))
        else:
            mask &= (sel[col] == value).to_numpy()
    found = sel[mask]
    return found.iloc[0].to_dict() if len(found) == 1 else None


def shown_lrs(row: pd.DataFrame, tuning: Tuning | None) -> tuple[list[tuple], str, str]:
    """[(lr, legend label, style)] for one row, a note on how they were chosen, and the pick's
    bracket class.

    The tuned view's pick at this row and the next larger lr of the row's grid; with no pick
    (every lr diverged) the two smallest; with no tuned view, every lr run."""
    grid = sorted(float(v) for v in pd.to_numeric(row["lr"], errors="coerce").dropna().unique())
    picked = selection(tuning, row)
    if picked is not None:
        lr = _float(picked.get("lr"))
        bracket = str(picked.get("bracketed") or "")
        if np.isfinite(lr):
            larger = [v for v in grid if v > lr and not np.isclose(v, lr)]
            out = [(lr, "lr selected on validation", SELECTED_STYLE)]
            if larger:
                out.append((larger[0], "next larger lr of the grid", NEXT_STYLE))
            return out, "" if larger else "selected lr is the grid's largest", bracket
        if grid:  # nothing selectable (every value diverged on some seed)
            out = [(grid[0], "smallest lr (no lr selectable)", UNPICKED_STYLE)]
            if len(grid) > 1:
                out.append((grid[1], "next larger lr of the grid", NEXT_STYLE))
            return out, str(picked.get("note") or "nothing selected"), ""
    if len(grid) == 1:
        return [(grid[0], "lr as run", SELECTED_STYLE)], "", ""
    colours = rank_colours(grid)
    return [(lr, f"lr={format_value(lr)}", {"color": colours[lr], "linestyle": "-"})
            for lr in grid], "no tuned view: every lr shown", ""  # fmt: skip


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _stability_page(records, title, rows, tuning, out, formats, page) -> list[Path]:
    with paper_style():
        fig, axes = plt.subplots(len(rows), 2, figsize=(9.0, 1.9 * len(rows) + 1.4),
                                 squeeze=False, layout="constrained")  # fmt: skip
        handles: dict[str, Line2D] = {}
        n_lost = 0
        for (label, row), (left, right) in zip(rows, axes, strict=True):
            right.sharex(left)
            lrs, note, bracket = shown_lrs(row, tuning)
            counts = []
            for lr, lr_label, style in lrs:
                at = row[np.isclose(row["lr"].astype(float), lr)]
                lost = at[at["exclusion"] == "diverged"]
                counts.append(f"{format_value(lr)}: {len(lost)}/{len(at)} diverged")
                n_lost += len(lost)
                handles.setdefault(lr_label, Line2D([], [], lw=1.2, label=lr_label, **style))
                _draw_sharpness(left, records, at, style)
                _draw_gaps(right, records, at, style)
            left.set_title(f"{label}" + (f" ({bracket})" if bracket else "") + " · lr "
                           + "; ".join(counts) + (f" · {note}" if note else ""),
                           fontsize=7.5, loc="left")  # fmt: skip
            _finish_sharpness(left, records, row)
            _finish_gaps(right, row)
        for ax in axes[-1]:
            ax.set_xlabel("step (linear)")
        extra = [Line2D([], [], color="0.2", lw=0.8, ls=(0, (2, 2)),
                        label=f"edge lr·λ = {EDGE:g} (left); gap bar {GAP_FRACTION:g} × initial "
                              "loss (right)"),
                 floor_handle(f"where a diverged trial stopped ({n_lost})")]  # fmt: skip
        fig.legend(handles=[*handles.values(), *extra], loc="outside lower center", ncol=2)
        scope_text = constant_description(pd.concat([r for _, r in rows]), TITLE_KEYS)
        set_title(fig, "Stability: lr·λ_max against the edge (left) and the loss jump at "
                  "feature updates (right)" + (f" — {title}" if title else "")
                  + (f" ({scope_text})" if scope_text else ""))  # fmt: skip
        return save(fig, out, formats, page)


def _config_cols(row: pd.DataFrame) -> set[str]:
    from ._schema import config_keys

    return {"study", *config_keys(row)}


def _lr_sharpness_measured(records: Records, row: pd.DataFrame) -> bool:
    for _, trial in row.iterrows():
        if len(series(records, trial, (LR_SHARPNESS_MAX, LR_SHARPNESS))):
            return True
    return False


def _draw_sharpness(ax, records: Records, at: pd.DataFrame, style: dict) -> None:
    """The latest value at each record as a step line; a dot at each record that measured one
    (its largest since the previous record), so a peak between records is not lost."""
    use_lr = _lr_sharpness_measured(records, at)
    latest, peak = (LR_SHARPNESS, LR_SHARPNESS_MAX) if use_lr else (SHARPNESS, None)
    for _, trial in at.iterrows():
        s = series(records, trial, (latest,))
        if len(s):
            ax.plot(s["step"], s["value"], lw=0.9, alpha=0.85, drawstyle="steps-post",
                    marker="o" if len(s) < 3 else None, ms=2.5, **style)  # fmt: skip
        dots = series(records, trial, (peak,), ("metrics",)) if peak else s.iloc[:0]
        if len(dots):
            ax.plot(dots["step"], dots["value"], ls="none", marker="o", ms=2.2, alpha=0.85,
                    color=style["color"])  # fmt: skip
        if trial["exclusion"] == "diverged":  # a value under the axis floor: ✕ at the floor
            above = len(s) and s["value"].iloc[-1] >= FLOOR_FRACTION * EDGE
            _mark_stop(ax, trial, s if above else s.iloc[:0], style["color"])


def _draw_gaps(ax, records: Records, at: pd.DataFrame, style: dict) -> None:
    for _, trial in at.iterrows():
        g = gap_series(records, trial)
        initial = initial_loss(records, trial)
        if len(g) and initial > 0:
            g = g.assign(value=g["value"] / initial)
            ax.plot(g["step"], g["value"], marker="o", ms=2.5, lw=0.6, alpha=0.85, **style)
        else:
            g = g.iloc[:0]
        if trial["exclusion"] == "diverged":
            _mark_stop(ax, trial, g, style["color"])


def _mark_stop(ax, trial: pd.Series, s: pd.DataFrame, c) -> None:
    """✕ at the trial's last step: on its curve's last value, or at the floor without one."""
    if len(s):
        ax.scatter([float(trial["last_step"])], [float(s["value"].iloc[-1])], marker="X", s=34,
                   color=c, edgecolors="white", linewidths=0.4, zorder=6)  # fmt: skip
    else:
        mark_floor(ax, [float(trial["last_step"])], c)


def _finish_sharpness(ax, records: Records, row: pd.DataFrame) -> None:
    values = [v for line in ax.get_lines() for v in np.asarray(line.get_ydata(), dtype=float)]
    if _lr_sharpness_measured(records, row):
        ax.axhline(EDGE, color="0.2", lw=0.8, ls=(0, (2, 2)), zorder=1)
        ax.set_ylabel("lr·λ_max")
        _log_if_wide(ax, [*values, EDGE])
    elif values:
        ax.set_ylabel("λ_max")
        _log_if_wide(ax, values)
        ax.text(0.99, 0.95, "lr·λ undefined (preconditioned steps): λ_max, no edge",
                transform=ax.transAxes, ha="right", va="top", fontsize=6.5, color="0.3")  # fmt: skip
    else:
        ax.text(0.5, 0.5, "no sharpness recorded", transform=ax.transAxes, ha="center",
                va="center", fontsize=7, color="0.3")  # fmt: skip
        ax.set_yticks([])


def _log_if_wide(ax, values: list[float]) -> None:
    """Log y when the values span more than 20×, its floor at FLOOR_FRACTION of the edge: after
    a blow-up the curvature can collapse by tens of decades, which would flatten the rest."""
    log_if_wide(ax, values)
    if ax.get_yscale() == "log":
        positive = [v for v in values if np.isfinite(v) and v > 0]
        ax.set_ylim(bottom=max(min(positive), FLOOR_FRACTION * EDGE))


def _finish_gaps(ax, row: pd.DataFrame) -> None:
    signed = [v for line in ax.get_lines() for v in np.asarray(line.get_ydata(), dtype=float)]
    signed = [v for v in signed if np.isfinite(v)]
    values = [abs(v) for v in signed]
    ax.set_ylabel("gap / initial loss")
    if not values:
        lazy = np.isinf(row["K"].astype(float)).all() and (row["trainer"] == LINEARISED).all()
        why = "K=∞: no feature update, no gap" if lazy else "no feature-update gap recorded"
        ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=7,
                color="0.3")  # fmt: skip
        ax.set_yticks([])
        return
    ax.axhline(GAP_FRACTION, color="0.2", lw=0.8, ls=(0, (2, 2)), zorder=1)
    ax.axhline(0.0, color="0.6", lw=0.5, zorder=1)
    if max(values) > SYMLOG_ABOVE:
        ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        top, bottom = max(max(signed), GAP_FRACTION), min(min(signed), 0.0)
        ax.set_ylim(bottom * 3 if bottom < -1 else -1.0, top * 3)
        ax.set_yticks(_symlog_ticks(bottom, top))
        ax.yaxis.set_major_formatter(FuncFormatter(_power_text))
        ax.yaxis.set_minor_locator(NullLocator())


def _symlog_ticks(bottom: float, top: float) -> list[float]:
    """0 and a few powers of ten each side: at most about five per side."""
    ticks = [0.0]
    for sign, end in ((1.0, top), (-1.0, -bottom)):
        if end < 1:
            continue
        decades = math.floor(math.log10(end))
        step = max(1, math.ceil((decades + 1) / 5))
        ticks += [sign * 10.0**e for e in range(0, decades + 1, step)]
    return sorted(ticks)


def _power_text(value: float, _pos: object = None) -> str:
    if value == 0 or abs(value) < 1e3:
        return f"{value:g}"
    return f"{'−' if value < 0 else ''}1e{round(math.log10(abs(value)))}"


# ---- the K × lr map --------------------------------------------------------------------------
def plot_stability_map(
    table: pd.DataFrame, out: str | Path, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Draw ``stability_map`` from ``stability_table``: per group of IL trials crossing K with lr,
    seeds trained / run and mean validation accuracy of the trained, per (K, lr) cell."""
    if table.empty:
        raise NothingToPlot("no trial finished or diverged yet")
    lin = table[table["trainer"] == LINEARISED]
    todo = []
    for key, part in lin.groupby(["study", "group", "arm"], sort=True):
        if part["k"].nunique() > 1 and part["lr"].nunique() > 1:
            refs = table[(table["study"] == key[0]) & (table["group"] == key[1])
                         & (table["trainer"] != LINEARISED)]  # fmt: skip
            todo.append((key, part, refs))
    if not todo:
        raise NothingToPlot("no group of IL trials crosses more than one K with more than one lr")
    paths: list[Path] = []
    for page, (key, part, refs) in enumerate(todo):
        paths += _map_page(key, part, refs, out, formats, page)
    return paths


def map_metric(frame: pd.DataFrame) -> tuple[str, str]:
    """The cell colour: mean validation accuracy, or test accuracy for results without it."""
    if frame["val_acc_mean"].notna().any():
        return "val_acc_mean", "mean validation accuracy of the seeds that trained"
    return "test_acc_mean", "mean test accuracy of the seeds that trained (no val_acc recorded)"


def _map_page(key, part, refs, out, formats, page) -> list[Path]:
    metric, label = map_metric(pd.concat([part, refs]))
    values = pd.concat([part[metric], refs[metric]]).astype(float)
    finite = values[np.isfinite(values)]
    norm = Normalize(finite.min(), finite.max()) if len(finite) else Normalize(0, 1)
    if len(finite) and norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin - 0.005, norm.vmax + 0.005)
    ks = sorted(part["k"].unique(), reverse=True)  # K=∞ on top, as in the phase diagram
    lrs = sorted(part["lr"].unique())
    ref_arms = sorted(refs["arm"].unique()) if len(refs) else []
    ref_lrs = sorted(refs["lr"].unique()) if len(refs) else []
    with paper_style():
        heights = [len(ks), max(len(ref_arms), 1)] if ref_arms else [len(ks)]
        fig, axes = plt.subplots(len(heights), 1, height_ratios=heights, squeeze=False,
                                 figsize=(1.05 * max(len(lrs), len(ref_lrs)) + 2.6,
                                          0.55 * sum(heights) + 1.9), layout="constrained")  # fmt: skip
        image = _cells(axes[0, 0], part, "k", ks, lrs, metric, norm,
                       [f"K={format_value(float(k))}" for k in ks])  # fmt: skip
        axes[0, 0].set_ylabel("K (steps between feature updates)")
        if ref_arms:
            _cells(axes[1, 0], refs, "arm", ref_arms, ref_lrs, metric, norm, ref_arms)
            axes[1, 0].set_title("reference arms, at their own learning rates", fontsize=8)
        axes[-1, 0].set_xlabel("learning rate")
        fig.colorbar(image, ax=list(axes[:, 0]), shrink=0.9, label=label)
        _study, group, arm = key
        where = ", ".join(x for x in (group if group != "all trials" else "", arm) if x)
        set_title(fig, f"Stability map: seeds trained / run, and {label.split(' of ')[0]} "
                  f"(✕: every seed diverged) — {where}")  # fmt: skip
        return save(fig, out, formats, page)


def _cells(ax, frame, row_key, row_values, col_values, metric, norm, row_labels):
    grid = np.full((len(row_values), len(col_values)), np.nan)
    text = {}
    for _, cell in frame.iterrows():
        i, j = row_values.index(cell[row_key]), col_values.index(cell["lr"])
        grid[i, j] = cell[metric] if cell["trained"] else np.nan
        value = f"\n{cell[metric]:.3f}" if cell["trained"] and np.isfinite(cell[metric]) else ""
        mark = "" if cell["trained"] else "\n✕"
        text[i, j] = (f"{int(cell['trained'])}/{int(cell['seeds'])}{value}{mark}", cell[metric])
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", norm=norm,
                      interpolation="nearest")  # fmt: skip
    ax.set_facecolor("0.92")  # an empty or all-diverged cell
    ax.grid(False)
    mid = 0.5 * (norm.vmin + norm.vmax)
    for (i, j), (label, value) in text.items():
        dark = np.isfinite(value) and np.isfinite(grid[i, j]) and value < mid
        ax.text(j, i, label, ha="center", va="center", fontsize=6.5,
                color="white" if dark else ("#C00000" if not np.isfinite(grid[i, j]) else "black"))  # fmt: skip
    ax.set_xticks(range(len(col_values)), [format_value(float(c)) for c in col_values])
    ax.set_yticks(range(len(row_values)), row_labels)
    ax.spines[["top", "right"]].set_visible(True)
    return image
