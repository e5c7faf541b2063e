"""Figure 1: accuracy and loss against the number of feature updates N (log axis).

Six panels: test accuracy (with the fitted curve, N₅₀ and N₉₀), train accuracy, test and
train loss, and the generalisation gaps (train − test accuracy, test − train loss), so slower
optimisation is not mistaken for worse generalisation. Points are the mean over seeds with a
95% bootstrap band (from 3 seeds; fewer show the seeds only); faint dots are single seeds.
K=∞ (N=0) cannot sit on a log axis, so it is a dashed level with its band; K=1 (N=T−1) is both
the rightmost point and a dotted level. Plain-trainer baselines on the same problem are
dash-dotted levels. Diverged trials are crosses at the floor of each panel, counted in the
legend (K=∞ ones at the left edge).

Thresholds inside the data (see ``_fit``): N₅₀ (◇) and N₉₀ (□) are drawn with their CIs only
inside the sampled N; a threshold or bound beyond it is an arrow at the edge of the data,
never a number. A group whose fit was rejected shows its raw means joined by a line, with
bootstrap bands over seeds, and no threshold; the legend says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ._fit import ABOVE, BELOW, FLAGS, fit_feature_updates, short_reason, sigmoid_model
from ._groups import (
    LINEARISED,
    Group,
    baselines,
    borrowed_references,
    diverged_like,
    groups,
    infinite_k,
    is_lazy,
    is_sgd_limit,
    matching_plain,
    n_updates,
    sampled_keys,
    usable,
)
from ._stats import mean_band, metric_range, summarise
from ._style import (
    LAZY_STYLE,
    PANELS,
    PLAIN_STYLES,
    SGD_STYLE,
    NothingToPlot,
    colour,
    constant_description,
    floor_handle,
    k_mappable,
    log_axis,
    log_if_wide,
    loss_label,
    mark_floor,
    pages,
    paper_style,
    save,
    set_title,
)

GROUPS_PER_PAGE = 5
FIGSIZE = (7.4, 8.4)
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "total_steps", "batch_size")


def plot_feature_updates(
    trials: pd.DataFrame,
    out: str | Path,
    fits: pd.DataFrame | None = None,
    formats: Sequence[str] = ("png",),
    note: str = "",
) -> list[Path]:
    """Draw figure 1 from ``load_trials(...)``; return the files written (one page per 5 groups).

    `fits` is ``fit_feature_updates(trials)``; without it the fit runs here without CIs.
    `note` goes into the title (e.g. how the learning rate was chosen). A group with a single
    N is no curve (an lr sweep at one K): it is left out, and raises NothingToPlot when alone.
    """
    found = groups(trials, LINEARISED)
    if not found:
        raise NothingToPlot("no finished linearised trials to place against N")
    key = sampled_key(trials)
    if key is not None:  # a searcher's study: one page, one point per trial, coloured by key
        with paper_style():
            fig = _draw_sampled(pd.concat([g.trials for g in found]), key, trials)
            return save(fig, out, formats)
    todo = [g for g in found if len(set(n_updates(g.trials))) > 1]
    if not todo:
        raise NothingToPlot("every group of linearised trials has a single N, so there is no "
                            "curve in N (an lr sweep is drawn against lr instead)")  # fmt: skip
    if fits is None:
        fits = fit_feature_updates(trials, n_boot=0)
    paths: list[Path] = []
    for page, chunk in enumerate(pages(todo, GROUPS_PER_PAGE)):
        with paper_style():
            fig = _draw(chunk, trials, fits, note)
            paths += save(fig, out, formats, page)
    return paths


def sampled_key(trials: pd.DataFrame) -> str | None:
    """The config key a searcher sampled from a continuous range, if any (Optuna, random).

    See ``sampled_keys``; only linearised trials count here, and the key must vary among them.
    """
    lin = trials[trials["trainer"] == LINEARISED] if "trainer" in trials else trials.iloc[:0]
    for key in sampled_keys(lin):
        if usable(lin)[key].nunique() > 1:
            return key
    return None


def _draw_sampled(lin: pd.DataFrame, key: str, trials: pd.DataFrame):
    """Every trial a point at its N (log(1 + N) axis, so K=∞ at N=0 is on it), coloured by
    the sampled key on a log scale; the best trial by validation accuracy ringed (by test
    accuracy only when no validation was recorded); diverged trials at the floor."""
    fig, axes = plt.subplots(3, 2, figsize=FIGSIZE, sharex=True, layout="constrained")
    t = lin.assign(N=n_updates(lin))
    lost = trials[(trials["exclusion"] == "diverged") & (trials["trainer"] == LINEARISED)]
    lost_n = np.ceil(lost["total_steps"].astype(float) / infinite_k(lost)) - 1
    values = pd.to_numeric(t[key]).astype(float)
    mappable = k_mappable(list(values))
    chooser = "val_acc" if "val_acc" in t and t["val_acc"].notna().any() else "test_acc"
    best = t[chooser].idxmax() if chooser in t and t[chooser].notna().any() else None
    loss_names = list(t.get("loss", pd.Series(dtype=object)))
    for (metric, label), ax in zip(PANELS, axes.flat, strict=True):
        if metric not in t.columns:
            continue
        mark_floor(ax, lost_n.clip(lower=0), "#C00000")
        ax.scatter(t["N"], t[metric], c=mappable.to_rgba(values), s=22, linewidths=0.4,
                   edgecolors="white", zorder=3)  # fmt: skip
        if best is not None:
            ax.scatter([t.loc[best, "N"]], [t.loc[best, metric]], s=90, facecolors="none",
                       edgecolors="black", linewidths=1.0, zorder=4)  # fmt: skip
        ax.set_xscale("function", functions=(np.log1p, np.expm1))
        top = max(float(t["N"].max()), 1.0)
        ticks = [v for v in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10_000) if v <= top * 1.5]
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        if metric in ("test_loss", "train_loss"):
            ax.set_ylabel(loss_label(label, loss_names))
            log_if_wide(ax, t[metric])
        else:
            ax.set_ylabel(label)
        if metric.endswith("_acc"):
            ax.set_ylim(top=min(ax.get_ylim()[1], 1.005))
        if metric.endswith("_gap"):
            ax.axhline(0.0, color="0.6", linewidth=0.6, zorder=0)
    for ax in axes[-1]:
        ax.set_xlabel("feature updates N (log(1 + N) scale; N = 0 is K = ∞)")
    bar = fig.colorbar(mappable, ax=axes, location="right", shrink=0.8, pad=0.02)
    bar.set_label(f"{key} (sampled; log scale)")
    studies = ", ".join(sorted(set(t["study"])))
    scope = constant_description(t, tuple(k for k in TITLE_KEYS if k != key))
    set_title(fig, f"Accuracy against feature updates · {studies}, {len(t)} sampled trials"
              + (f" ({scope})" if scope else ""))  # fmt: skip
    handles = []
    if best is not None:
        which = "validation" if chooser == "val_acc" else "test (no validation recorded)"
        ring = Line2D([], [], marker="o", ms=8, mfc="none", mec="black", linestyle="none",
                      label=f"best {which} accuracy, at {key}={t.loc[best, key]:.3g}, "
                            f"N={t.loc[best, 'N']:g}: test accuracy "
                            f"{t.loc[best, 'test_acc']:.4f}")  # fmt: skip
        handles.append(ring)
    handles.append(floor_handle(f"diverged ({len(lost)}), at the floor"))
    fig.legend(handles=handles, loc="outside lower center")
    return fig


def _draw(chunk: Sequence[Group], trials: pd.DataFrame, fits: pd.DataFrame, note: str = ""):
    fig, axes = plt.subplots(3, 2, figsize=FIGSIZE, sharex=True, layout="constrained")
    loss_names = pd.concat([g.trials for g in chunk]).get("loss", pd.Series(dtype=object))
    plain = [baselines(matching_plain(trials, g.key)) for g in chunk]
    found = [borrowed_references(trials, g) for g in chunk]
    borrowed, level_notes = [b for b, _ in found], [note for _, note in found]
    lost = [diverged_like(trials, g) for g in chunk]
    plain_styles = _plain_styles(plain)
    group_handles = []
    for i, group in enumerate(chunk):
        fit = _fit_row(fits, group)
        for (metric, _), ax in zip(PANELS, axes.flat, strict=True):
            if metric not in group.trials.columns:
                continue
            fitted = fit if metric == _fit_metric(fit) else None
            _draw_group(ax, group, borrowed[i], metric, colour(i), fitted)
            _draw_plain(ax, plain[i], metric, colour(i), plain_styles)
            _draw_diverged(ax, lost[i], colour(i))
        text = _legend(group, fit, fits, len(lost[i]))
        if level_notes[i]:  # a level from elsewhere is labelled as such, in the figure itself
            text += "\n    " + re.sub(r" (trials of the same config|\(same config\))", "",
                                       level_notes[i])  # fmt: skip
        if note and text.startswith("all trials:"):  # the tuned view's one group: say what it is
            text = note + text[len("all trials") :]
        group_handles.append(Line2D([], [], color=colour(i), marker="o", ms=4, label=text))
    everything = pd.concat([g.trials for g in chunk])
    for (metric, label), ax in zip(PANELS, axes.flat, strict=True):
        log_axis(ax, "x", n_updates(everything))
        if metric in ("test_loss", "train_loss"):
            ax.set_ylabel(loss_label(label, list(loss_names)))
            values = pd.concat([g.trials[metric] for g in chunk if metric in g.trials])
            log_if_wide(ax, values)
        else:
            ax.set_ylabel(label)
        if metric.endswith("_acc"):
            ax.set_ylim(top=min(ax.get_ylim()[1], 1.005))
        if metric.endswith("_gap"):
            ax.axhline(0.0, color="0.6", linewidth=0.6, zorder=0)
    one_shot = "one_shot" in set(everything.get("schedule", pd.Series(dtype=object)))
    for ax in axes[-1]:
        ax.set_xlabel("feature updates N (log scale)" + ("; one-shot: N = t, SGD steps before "
                      "the one linearisation" if one_shot else ""))  # fmt: skip
    _top_k_axis(axes[0], chunk)
    scope = constant_description(everything, TITLE_KEYS)
    studies = ", ".join(sorted(set(everything["study"])))
    extra = "; ".join(x for x in (scope, note) if x)
    set_title(
        fig, f"Accuracy against feature updates · {studies}" + (f" ({extra})" if extra else "")
    )
    n_lost = sum(len(x) for x in lost)
    handles = group_handles + _style_handles(plain_styles, n_lost, chunk, fits)
    fig.legend(handles=handles, loc="outside lower center", ncol=2 if len(chunk) > 1 else 3)
    return fig


def _draw_group(
    ax, group: Group, borrowed: pd.DataFrame, metric: str, c: str, fit: pd.Series | None
) -> None:
    """Seeds, mean ± band over seeds, reference levels and (on one panel) the fitted curve.

    `borrowed` reference trials (another schedule's K=1 / K=∞) give levels, never points.
    """
    t = group.trials.assign(N=n_updates(group.trials))
    on_axis = t[~is_lazy(t) & (t["N"] > 0)]
    t = pd.concat([t, borrowed.assign(N=n_updates(borrowed))]) if len(borrowed) else t
    lazy, sgd = is_lazy(t), is_sgd_limit(t)
    ax.scatter(on_axis["N"], on_axis[metric], s=5, color=c, alpha=0.35, linewidths=0)
    s = summarise(on_axis, "N", metric)
    ax.fill_between(s["key"], s["lo"], s["hi"], color=c, alpha=0.18, linewidth=0)
    ax.plot(s["key"], s["mean"], "o", ms=3.5, color=c, linestyle="none" if fit is not None else "-",
            linewidth=0.8)  # fmt: skip
    for mask, style in ((lazy, LAZY_STYLE), (sgd, SGD_STYLE)):
        _level(ax, t.loc[mask, metric], c, style, metric_range(metric))
    if fit is not None:
        _draw_fit(ax, fit, t, c)


def _draw_diverged(ax, lost: pd.DataFrame, c: str) -> None:
    """Diverged trials at the floor, at the N their K would have given (K=∞ at the left)."""
    if lost.empty:
        return
    k = infinite_k(lost)
    n = np.ceil(lost["total_steps"].astype(float).to_numpy() / k) - 1
    mark_floor(ax, np.where(np.isinf(k), 1.0, n), c, left=np.isinf(k))


def _level(ax, values: pd.Series, c: str, style: dict, bounds: tuple[float, float]) -> None:
    mean, lo, hi = mean_band(values, bounds)
    if math.isnan(mean):
        return
    ax.axhline(mean, color=c, **style)
    if math.isfinite(lo):
        ax.axhspan(lo, hi, color=c, alpha=0.08, linewidth=0)


THRESHOLD_GID = "threshold"  # every artist that shows a threshold: a test counts them


def _draw_fit(ax, fit: pd.Series, t: pd.DataFrame, c: str) -> None:
    """The fitted curve, N₅₀ (◇) and N₉₀ (□) with their CIs inside the sampled N, and an arrow
    at the edge of the data for each threshold or bound that lies beyond it (censored)."""
    n_max = max(float(t["total_steps"].max()), float(fit["n_max"]))
    xs = np.geomspace(fit["n_min"] / 1.5, n_max * 1.5, 200)
    ax.plot(xs, sigmoid_model(xs, fit["a_inf"], fit["a_1"], fit["n50_param"], fit["slope"]),
            color=c, linewidth=1.1)  # fmt: skip
    edges = {BELOW: float(fit["n_min"]), ABOVE: float(fit["n_max"])}
    for name, q, marker in (("n50", 0.5, "D"), ("n90", 0.9, "s")):
        level = fit["a_inf"] + q * (fit["a_1"] - fit["a_inf"])
        flag = str(fit.get(f"{name}_flag", "") or "")
        if flag in edges:  # the threshold itself lies beyond the data: an arrow, no number
            _arrow(ax, edges[flag], level, flag, c)
            continue
        value = fit.get(name, math.nan)
        if not np.isfinite(value):
            continue
        lo, hi = fit.get(f"{name}_lo", math.nan), fit.get(f"{name}_hi", math.nan)
        err = [[value - lo if np.isfinite(lo) else 0.0], [hi - value if np.isfinite(hi) else 0.0]]
        drawn = ax.errorbar([value], [level], xerr=err, fmt=marker, ms=4.5, mfc="white", mec=c,
                            ecolor=c, capsize=2.5, zorder=5)  # fmt: skip
        for artist in drawn.get_children():
            artist.set_gid(THRESHOLD_GID)
        for side in ("_lo", "_hi"):  # a bound beyond the data: the bar runs to its edge, arrowed
            bound_flag = str(fit.get(f"{name}{side}_flag", "") or "")
            if bound_flag in edges:
                ax.plot([value, edges[bound_flag]], [level, level], color=c, linewidth=1.0,
                        gid=THRESHOLD_GID)  # fmt: skip
                _arrow(ax, edges[bound_flag], level, bound_flag, c)


def _arrow(ax, x: float, y: float, flag: str, c: str) -> None:
    """An arrow at the data edge `x`, pointing out of the sampled N (left for < N_min)."""
    factor = 1 / 1.6 if flag == BELOW else 1.6  # a fixed length on the log axis
    ax.annotate("", xy=(x * factor, y), xytext=(x, y), gid=THRESHOLD_GID, zorder=5,
                arrowprops={"arrowstyle": "-|>", "color": c, "linewidth": 1.0,
                            "mutation_scale": 8})  # fmt: skip


def _plain_styles(plain: list[list[tuple[str, pd.DataFrame]]]) -> dict[str, tuple]:
    """One dash pattern per plain baseline label, the same in every group."""
    labels = sorted({label for found in plain for label, _ in found})
    return {label: PLAIN_STYLES[i % len(PLAIN_STYLES)] for i, label in enumerate(labels)}


def _draw_plain(ax, plain: list, metric: str, c: str, styles: dict[str, tuple]) -> None:
    for label, frame in plain:
        mean = frame[metric].mean() if metric in frame else math.nan
        if np.isfinite(mean):
            ax.axhline(mean, color=c, linestyle=styles[label], linewidth=0.9, alpha=0.85)


NICE_K = tuple(m * 10**e for e in range(0, 8) for m in (1, 2, 5))


def _top_k_axis(top_axes, chunk: Sequence[Group]) -> None:
    """A secondary axis in K when every group has the same T and the uniform schedule.

    θ_s moves after steps K, 2K, … < T, so N = T/K − 1 when K divides T: K = T/(N + 1).
    Ticks are fixed at 1, 2, 5 × 10ⁿ between 1 and T: K < 1 is no schedule, and the axis
    padding beyond N = T − 1 would otherwise show one.
    """
    totals = {float(t) for g in chunk for t in g.trials["total_steps"]}
    schedules = {s for g in chunk for s in g.trials.get("schedule", pd.Series(["uniform"]))}
    if len(totals) != 1 or schedules != {"uniform"}:
        return
    total = totals.pop()

    def to_k(n: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / (np.asarray(n, dtype=float) + 1)

    def to_n(k: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / np.asarray(k, dtype=float) - 1

    ticks = [k for k in NICE_K if 1 <= k <= total / 2]  # K > T/2 is N = 0 or 1: crowded
    for ax in top_axes:
        sec = ax.secondary_xaxis("top", functions=(to_k, to_n))
        sec.xaxis.set_major_locator(FixedLocator(ticks))
        sec.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
        sec.xaxis.set_minor_locator(NullLocator())
        sec.set_xlabel("K = T/(N+1) (steps between feature updates)")


def _fit_rows(fits: pd.DataFrame | None, group: Group) -> pd.DataFrame:
    if fits is None or fits.empty:
        return pd.DataFrame(columns=["reason", "fit_ok"])
    return fits[(fits["group"] == group.label) & (fits["study"] == group.key["study"])]


def _fit_row(fits: pd.DataFrame | None, group: Group) -> pd.Series | None:
    match = _fit_rows(fits, group)
    match = match[match["fit_ok"].astype(bool)]
    return match.iloc[0] if len(match) else None


def _fit_metric(fit: pd.Series | None) -> str | None:
    return None if fit is None else fit["metric"]


def _threshold(fit: pd.Series, name: str) -> str:
    """'N₅₀ = 3.2 [2.1, >30]', or 'N₅₀ < 1' when it lies below the data (censored)."""
    label = {"n50": "N₅₀", "n90": "N₉₀"}[name]
    flag = str(fit.get(f"{name}_flag", "") or "")
    if flag == BELOW:
        return f"{label} < {fit['n_min']:g}"
    if flag == ABOVE:
        return f"{label} > {fit['n_max']:g}"
    value = fit[name]
    if not np.isfinite(value):
        return f"{label}: –"
    bounds = [_bound(fit, name, side) for side in ("_lo", "_hi")]
    ci = f" [{bounds[0]}, {bounds[1]}]" if all(bounds) else ""
    return f"{label} = {value:.3g}{ci}"


def _bound(fit: pd.Series, name: str, side: str) -> str:
    """A CI bound as text: its value, or '<1' / '>30' when censored at the data's edge."""
    flag = str(fit.get(f"{name}{side}_flag", "") or "")
    if flag == BELOW:
        return f"<{fit['n_min']:g}"
    if flag == ABOVE:
        return f">{fit['n_max']:g}"
    value = fit.get(f"{name}{side}", math.nan)
    return f"{value:.3g}" if np.isfinite(value) else ""


def _legend(group: Group, fit: pd.Series | None, fits: pd.DataFrame, n_lost: int = 0) -> str:
    lost = f"; {n_lost} diverged" if n_lost else ""
    if fit is None:
        failed = _fit_rows(fits, group)
        reason = str(failed["reason"].iloc[0]) if len(failed) else ""
        short = short_reason(reason) if reason else "see summary.md"
        return f"{group.label}: no fit ({short}); raw means, no threshold{lost}"
    if n_lost:
        lost = f"; fitted without {n_lost} diverged"
    return f"{group.label}: {_threshold(fit, 'n50')}, {_threshold(fit, 'n90')}{lost}"


def _style_handles(
    plain_styles: dict[str, tuple], n_lost: int, chunk: Sequence[Group], fits: pd.DataFrame
) -> list:
    grey = "0.3"
    fitted = [f for f in (_fit_row(fits, g) for g in chunk) if f is not None]
    handles = [
        Line2D([], [], color=grey, marker="o", ms=3.5, linestyle="none", label="mean over seeds"),
        plt.Rectangle((0, 0), 1, 1, color=grey, alpha=0.25,
                      label="95% bootstrap CI of the mean (≥ 3 seeds)"),
        Line2D([], [], color=grey, linewidth=1.1, label="fit (◇ N₅₀, □ N₉₀ ± 95% CI)"),
        Line2D([], [], color=grey, label="K=∞ level (N=0)", **LAZY_STYLE),
        Line2D([], [], color=grey, label="K=1 level (N=T−1)", **SGD_STYLE),
    ]  # fmt: skip
    if any(str(f.get(flag, "") or "") for f in fitted for flag in FLAGS):
        handles.append(Line2D([], [], color=grey, marker=r"$\rightarrow$", ms=9,
                              linestyle="none", label="beyond the sampled N (censored)"))  # fmt: skip
    for label, style in plain_styles.items():
        handles.append(Line2D([], [], color=grey, linewidth=0.9, label=label, linestyle=style))
    handles.append(floor_handle(f"diverged trial ({n_lost}), at the panel floor"))
    return handles
