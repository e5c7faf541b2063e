"""Figure 5: the proxy against the measure, final kernel distance to init against N.

The paper's proxy for feature learning is N, the number of feature updates; the measure is
the kernel distance S(K_init, K_final) on the probe batch (Fort et al. 2020). Spearman's rank
correlation between them, per group over single trials, is printed in the legend and the
summary. N = 0 (K=∞) belongs on this axis, so it is symmetric-log: linear below 1. Diverged
trials have no final measure: crosses at the floor at their N, counted in the legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from ._groups import LINEARISED, diverged_like, groups, infinite_k, n_updates
from ._stats import spearman, summarise
from ._style import (
    NothingToPlot,
    colour,
    constant_description,
    floor_handle,
    mark_floor,
    pages,
    paper_style,
    save,
)

MEASURE = "kernel_distance_init"
GROUPS_PER_PAGE = 6
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "total_steps", "batch_size")
LABELS = {
    "kernel_distance_init": "kernel distance to init, 1 − cos(K₀, K_T)",
    "kernel_distance_prev": "kernel distance to previous linearisation point",
    "kernel_alignment": "kernel–target alignment",
    "param_change": "relative parameter change ‖θ − θ₀‖/‖θ₀‖",
}


def measure_correlations(trials: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Spearman's rho between N and the final `measure`, one row per group of linearised trials."""
    rows = []
    for group in groups(trials, LINEARISED):
        if measure not in group.trials.columns:
            continue
        rho, p, n = spearman(n_updates(group.trials), group.trials[measure])
        rows.append({"group": group.label, "study": group.key["study"], "measure": measure,
                     "n_trials": n, "spearman_rho": rho, "p_value": p})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["group", "study", "measure", "n_trials", "spearman_rho", "p_value"]
    )


def plot_measure(
    trials: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    measure: str = MEASURE,
) -> list[Path]:
    """Draw figure 5 from ``load_trials(...)``: final `measure` against N, with Spearman's rho."""
    todo = [g for g in groups(trials, LINEARISED)
            if measure in g.trials.columns and g.trials[measure].notna().any()]  # fmt: skip
    if not todo:
        raise NothingToPlot(f"no finished linearised trial recorded {measure} (probe off?)")
    paths: list[Path] = []
    for page, chunk in enumerate(pages(todo, GROUPS_PER_PAGE)):
        with paper_style():
            fig, ax = plt.subplots(figsize=(5.6, 4.4), layout="constrained")
            handles = []
            for i, group in enumerate(chunk):
                t = group.trials.assign(N=n_updates(group.trials)).dropna(subset=[measure])
                c = colour(i)
                ax.scatter(t["N"], t[measure], s=8, color=c, alpha=0.4, linewidths=0)
                s = summarise(t, "N", measure)
                ax.plot(s["key"], s["mean"], "o-", color=c, ms=3.5, linewidth=1.1)
                ax.fill_between(s["key"], s["lo"], s["hi"], color=c, alpha=0.18, linewidth=0)
                rho, p, n = spearman(t["N"], t[measure])
                lost = diverged_like(trials, group)
                k = infinite_k(lost)
                n_lost = mark_floor(ax, np.where(np.isinf(k), 0.0,
                                    np.ceil(lost["total_steps"].astype(float) / k) - 1), c)  # fmt: skip
                label = group.label if len(todo) > 1 else "mean over seeds"
                label += f" ({n_lost} diverged)" if n_lost else ""
                handles.append(Line2D([], [], color=c, marker="o", ms=3.5,
                                      label=f"{label}: {_rho_text(rho, p, n)}"))  # fmt: skip
            ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
            ax.set_xlim(left=-0.2)
            ax.set_xlabel("feature updates N (symmetric log; N = 0 is K = ∞)")
            ax.set_ylabel(LABELS.get(measure, measure.replace("_", " ")))
            scope = constant_description(pd.concat([g.trials for g in chunk]), TITLE_KEYS)
            ax.set_title(
                "Proxy N against measured feature learning" + (f"\n({scope})" if scope else "")
            )
            handles.append(floor_handle("diverged trial, at the floor (no final measure)"))
            fig.legend(handles=handles, loc="outside lower center", ncol=1)
            paths += save(fig, out, formats, page)
    return paths


def _rho_text(rho: float, p: float, n: int) -> str:
    if not np.isfinite(rho):
        return f"Spearman ρ undefined (n = {n})"
    return f"Spearman ρ = {rho:.3g} (p = {p:.2g}, n = {n})"
