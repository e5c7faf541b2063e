"""Figure 1: accuracy and loss against the number of feature updates N (log axis).

Four panels: test accuracy (with the fitted curve and N₅₀), train accuracy, test loss, train
loss, so slower optimisation is not mistaken for worse generalisation. Points are the mean
over seeds with a 95% Student-t band; faint dots are single seeds. K=∞ (N=0) cannot sit on a
log axis, so it is a dashed level with its band; K=1 (N=T−1) is both the rightmost point and a
dotted level. Plain-trainer baselines on the same problem are dash-dotted levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._fit import fit_feature_updates, sigmoid_model
from ._groups import (
    LINEARISED,
    Group,
    baselines,
    borrowed_references,
    groups,
    is_lazy,
    is_sgd_limit,
    matching_plain,
    n_updates,
    usable,
)
from ._schema import group_keys, varying
from ._stats import mean_ci, summarise
from ._style import (
    LAZY_STYLE,
    PLAIN_STYLES,
    SGD_STYLE,
    NothingToPlot,
    colour,
    constant_description,
    k_mappable,
    log_axis,
    log_if_wide,
    loss_label,
    pages,
    paper_style,
    plain_log_ticks,
    save,
    set_title,
)

GROUPS_PER_PAGE = 5
PANELS = (
    ("test_acc", "test accuracy"),
    ("train_acc", "train accuracy"),
    ("test_loss", "test"),
    ("train_loss", "train"),
)
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "total_steps", "batch_size")


def plot_feature_updates(
    trials: pd.DataFrame,
    out: str | Path,
    fits: pd.DataFrame | None = None,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Draw figure 1 from ``load_trials(...)``; return the files written (one page per 5 groups).

    `fits` is ``fit_feature_updates(trials)``; without it the fit runs here without CIs.
    """
    todo = groups(trials, LINEARISED)
    if not todo:
        raise NothingToPlot("no finished linearised trials to place against N")
    key = sampled_key(trials)
    if key is not None:  # a searcher's study: one page, one point per trial, coloured by key
        with paper_style():
            return save(_draw_sampled(pd.concat([g.trials for g in todo]), key), out, formats)
    if fits is None:
        fits = fit_feature_updates(trials, n_boot=0)
    paths: list[Path] = []
    for page, chunk in enumerate(pages(todo, GROUPS_PER_PAGE)):
        with paper_style():
            fig = _draw(chunk, trials, fits)
            paths += save(fig, out, formats, page)
    return paths


def sampled_key(trials: pd.DataFrame) -> str | None:
    """The config key a searcher sampled from a continuous range, if any (Optuna, random).

    Such a key takes a new value in most trials, so grouping by it leaves one trial per group:
    a page of one-point "curves". It must be numeric and positive (it is drawn on a log colour
    scale) and distinct in at least half of at least 6 finished linearised trials.
    """
    subset = usable(trials)
    subset = subset[subset["trainer"] == LINEARISED] if "trainer" in subset else subset.iloc[:0]
    if len(subset) < 6:
        return None
    for key in varying(subset, group_keys(subset)):
        values = pd.to_numeric(subset[key], errors="coerce")
        if values.notna().all() and (values > 0).all() and values.nunique() >= len(subset) / 2:
            return key
    return None


def _draw_sampled(lin: pd.DataFrame, key: str):
    """Every trial a point at its N (log(1 + N) axis, so K=∞ at N=0 is on it), coloured by
    the sampled key on a log scale; the best trial by test accuracy ringed."""
    fig, axes = plt.subplots(2, 2, figsize=(7.4, 6.0), sharex=True, layout="constrained")
    t = lin.assign(N=n_updates(lin))
    values = pd.to_numeric(t[key]).astype(float)
    mappable = k_mappable(list(values))
    best = t["test_acc"].idxmax() if "test_acc" in t and t["test_acc"].notna().any() else None
    loss_names = list(t.get("loss", pd.Series(dtype=object)))
    for (metric, label), ax in zip(PANELS, axes.flat, strict=True):
        if metric not in t.columns:
            continue
        ax.scatter(t["N"], t[metric], c=mappable.to_rgba(values), s=22, linewidths=0.4,
                   edgecolors="white", zorder=3)  # fmt: skip
        if best is not None:
            ax.scatter([t.loc[best, "N"]], [t.loc[best, metric]], s=90, facecolors="none",
                       edgecolors="black", linewidths=1.0, zorder=4)  # fmt: skip
        ax.set_xscale("function", functions=(np.log1p, np.expm1))
        top = max(float(t["N"].max()), 1.0)
        ticks = [v for v in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10_000) if v <= top * 1.5]
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.set_ylabel(label if "acc" in metric else loss_label(label, loss_names))
        if "loss" in metric:
            log_if_wide(ax, t[metric])
        else:
            ax.set_ylim(top=min(ax.get_ylim()[1], 1.005))
    for ax in axes[1]:
        ax.set_xlabel("feature updates N (log(1 + N) scale; N = 0 is K = ∞)")
    bar = fig.colorbar(mappable, ax=axes, location="right", shrink=0.8, pad=0.02)
    bar.set_label(f"{key} (sampled; log scale)")
    studies = ", ".join(sorted(set(t["study"])))
    scope = constant_description(t, tuple(k for k in TITLE_KEYS if k != key))
    set_title(fig, f"Accuracy against feature updates · {studies}, {len(t)} sampled trials"
              + (f" ({scope})" if scope else ""))  # fmt: skip
    if best is not None:
        ring = Line2D([], [], marker="o", ms=8, mfc="none", mec="black", linestyle="none",
                      label=f"best test accuracy: {t.loc[best, 'test_acc']:.4f} at "
                            f"{key}={t.loc[best, key]:.3g}, N={t.loc[best, 'N']:g}")  # fmt: skip
        fig.legend(handles=[ring], loc="outside lower center")
    return fig


def _draw(chunk: Sequence[Group], trials: pd.DataFrame, fits: pd.DataFrame):
    fig, axes = plt.subplots(2, 2, figsize=(7.4, 6.0), sharex=True, layout="constrained")
    loss_names = pd.concat([g.trials for g in chunk]).get("loss", pd.Series(dtype=object))
    plain = [baselines(matching_plain(trials, g.key)) for g in chunk]
    borrowed = [borrowed_references(trials, g)[0] for g in chunk]
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
        group_handles.append(
            Line2D([], [], color=colour(i), marker="o", ms=4, label=_legend(group, fit, fits))
        )
    everything = pd.concat([g.trials for g in chunk])
    for (metric, label), ax in zip(PANELS, axes.flat, strict=True):
        log_axis(ax, "x", n_updates(everything))
        ax.set_ylabel(label if "acc" in metric else loss_label(label, list(loss_names)))
        if "loss" in metric:
            values = pd.concat([g.trials[metric] for g in chunk if metric in g.trials])
            log_if_wide(ax, values)
        else:
            ax.set_ylim(top=min(ax.get_ylim()[1], 1.005))
    for ax in axes[1]:
        ax.set_xlabel("feature updates N (relinearisations; log scale)")
    _top_k_axis(axes[0], chunk)
    scope = constant_description(everything, TITLE_KEYS)
    studies = ", ".join(sorted(set(everything["study"])))
    set_title(
        fig, f"Accuracy against feature updates · {studies}" + (f" ({scope})" if scope else "")
    )
    handles = group_handles + _style_handles(plain_styles)
    fig.legend(handles=handles, loc="outside lower center", ncol=3 if len(handles) > 4 else 4)
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
        _level(ax, t.loc[mask, metric], c, style)
    if fit is not None:
        _draw_fit(ax, fit, t, c)


def _level(ax, values: pd.Series, c: str, style: dict) -> None:
    mean, lo, hi = mean_ci(values)
    if math.isnan(mean):
        return
    ax.axhline(mean, color=c, **style)
    if math.isfinite(lo):
        ax.axhspan(lo, hi, color=c, alpha=0.08, linewidth=0)


def _draw_fit(ax, fit: pd.Series, t: pd.DataFrame, c: str) -> None:
    n_max = max(float(t["total_steps"].max()), float(fit["n_max"]))
    xs = np.geomspace(fit["n_min"] / 1.5, n_max * 1.5, 200)
    ax.plot(xs, sigmoid_model(xs, fit["a_inf"], fit["a_1"], fit["n50"], fit["slope"]),
            color=c, linewidth=1.1)  # fmt: skip
    mid = fit["a_inf"] + 0.5 * (fit["a_1"] - fit["a_inf"])
    lo, hi = fit.get("n50_lo", math.nan), fit.get("n50_hi", math.nan)
    xerr = [[fit["n50"] - lo], [hi - fit["n50"]]] if np.isfinite([lo, hi]).all() else None
    ax.errorbar([fit["n50"]], [mid], xerr=xerr, fmt="D", ms=4.5, mfc="white", mec=c, ecolor=c,
                capsize=2.5, zorder=5)  # fmt: skip


def _plain_styles(plain: list[list[tuple[str, pd.DataFrame]]]) -> dict[str, tuple]:
    """One dash pattern per plain baseline label, the same in every group."""
    labels = sorted({label for found in plain for label, _ in found})
    return {label: PLAIN_STYLES[i % len(PLAIN_STYLES)] for i, label in enumerate(labels)}


def _draw_plain(ax, plain: list, metric: str, c: str, styles: dict[str, tuple]) -> None:
    for label, frame in plain:
        mean = frame[metric].mean() if metric in frame else math.nan
        if np.isfinite(mean):
            ax.axhline(mean, color=c, linestyle=styles[label], linewidth=0.9, alpha=0.85)


def _top_k_axis(top_axes, chunk: Sequence[Group]) -> None:
    """A secondary axis in K when every group has the same T and the uniform schedule.

    θ_s moves after steps K, 2K, … < T, so N = T/K − 1 when K divides T: K = T/(N + 1).
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

    for ax in top_axes:
        sec = ax.secondary_xaxis("top", functions=(to_k, to_n))
        plain_log_ticks(sec.xaxis, subs=(1.0, 2.0, 5.0))
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


def _legend(group: Group, fit: pd.Series | None, fits: pd.DataFrame) -> str:
    if fit is None:
        failed = _fit_rows(fits, group)
        reason = str(failed["reason"].iloc[0]) if len(failed) else ""
        short = reason.split(":")[0][:70] if reason else "see summary.md"
        return f"{group.label}: no fit ({short})"
    lo, hi = fit.get("n50_lo", math.nan), fit.get("n50_hi", math.nan)
    ci = f" [{lo:.3g}, {hi:.3g}]" if np.isfinite([lo, hi]).all() else ""
    return f"{group.label}: N₅₀ = {fit['n50']:.3g}{ci}, N₉₀ = {fit['n90']:.3g}"


def _style_handles(plain_styles: dict[str, tuple]) -> list:
    grey = "0.3"
    handles = [
        Line2D([], [], color=grey, marker="o", ms=3.5, linestyle="none", label="mean over seeds"),
        plt.Rectangle((0, 0), 1, 1, color=grey, alpha=0.25, label="95% CI of the mean"),
        Line2D([], [], color=grey, linewidth=1.1, label="fit (◇ = N₅₀ ± 95% CI)"),
        Line2D([], [], color=grey, label="K=∞ level (N=0)", **LAZY_STYLE),
        Line2D([], [], color=grey, label="K=1 level (N=T−1)", **SGD_STYLE),
    ]
    for label, style in plain_styles.items():
        handles.append(Line2D([], [], color=grey, linewidth=0.9, label=label, linestyle=style))
    return handles
