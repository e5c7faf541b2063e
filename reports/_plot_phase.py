"""Figure 2: the phase diagram, final test accuracy over total steps T × K (or T × N).

One heatmap per group of linearised trials that share everything but T, K and the seed. Each
cell is the mean over seeds, printed in the cell; an empty cell had no finished trial. K=∞ is
the top row. Viridis, which reads in grey and for colour-blind readers. A cell with diverged
trials says how many (✕n); one where every trial diverged holds only that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._groups import LINEARISED, diverged_like, groups, infinite_k, n_updates
from ._schema import SWEEP_KEYS, format_value
from ._style import NothingToPlot, constant_description, pages, paper_style, save, set_title

PANELS_PER_PAGE = 4
TITLE_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "batch_size")


def plot_phase_diagram(
    trials: pd.DataFrame,
    out: str | Path,
    formats: Sequence[str] = ("png",),
    metric: str = "test_acc",
    rows: str = "k",
) -> list[Path]:
    """Draw figure 2 from ``load_trials(...)``: `metric` over T (columns) × `rows` ('k' or 'n')."""
    if rows not in ("k", "n"):
        raise ValueError(f"rows={rows!r}: use 'k' or 'n'")
    todo = [g for g in groups(trials, LINEARISED, drop=(*SWEEP_KEYS, "total_steps"))
            if g.trials["total_steps"].nunique() > 1]  # fmt: skip
    if not todo:
        raise NothingToPlot("the study has a single total_steps T, so there is no T × K plane")
    paths: list[Path] = []
    for page, chunk in enumerate(pages(todo, PANELS_PER_PAGE)):
        with paper_style():
            fig, axes = plt.subplots(1, len(chunk), figsize=(3.9 * len(chunk) + 1.0, 4.0),
                                     squeeze=False, layout="constrained")  # fmt: skip
            n_lost = 0
            for ax, group in zip(axes[0], chunk, strict=True):
                lost = diverged_like(trials, group, (*SWEEP_KEYS, "total_steps"))
                n_lost += len(lost)
                image = _heatmap(ax, group.trials, metric, rows, lost)
                ax.set_title(group.label if len(todo) > 1 else "")
            fig.colorbar(image, ax=list(axes[0]), shrink=0.9,
                         label=f"final {metric.replace('_', ' ').replace('acc', 'accuracy')}")  # fmt: skip
            scope = constant_description(pd.concat([g.trials for g in chunk]), TITLE_KEYS)
            lost_note = f"; ✕n: n diverged trials ({n_lost} in all)" if n_lost else ""
            set_title(fig, "Phase diagram: mean over seeds" + (f" ({scope})" if scope else "")
                      + lost_note)  # fmt: skip
            paths += save(fig, out, formats, page)
    return paths


def _heatmap(ax, trials: pd.DataFrame, metric: str, rows: str, lost: pd.DataFrame | None = None):
    """One T × K (or T × N) grid of means, annotated; returns the image for the colour bar."""
    t = trials.assign(N=n_updates(trials))
    t["row"] = infinite_k(t) if rows == "k" else t["N"]
    cells = t.dropna(subset=[metric]).groupby(["row", "total_steps"])[metric].agg(["mean", "size"])
    lost = lost if lost is not None else t.iloc[:0]
    lost_rows = infinite_k(lost) if rows == "k" else (
        np.ceil(lost["total_steps"].astype(float) / infinite_k(lost)) - 1)  # fmt: skip
    lost_cells = pd.Series(1, index=pd.MultiIndex.from_arrays(
        [np.asarray(lost_rows, dtype=float), lost["total_steps"].to_numpy()])).groupby(level=[0, 1]).sum()  # fmt: skip
    row_values = sorted(set(cells.index.get_level_values(0)) | set(lost_cells.index.get_level_values(0)),
                        reverse=rows == "k")  # fmt: skip
    col_values = sorted(
        set(cells.index.get_level_values(1)) | set(lost_cells.index.get_level_values(1))
    )
    grid = np.full((len(row_values), len(col_values)), np.nan)
    for (r, c), stat in cells.iterrows():
        grid[row_values.index(r), col_values.index(c)] = stat["mean"]
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis",
                      vmin=finite.min(), vmax=finite.max(), interpolation="nearest")  # fmt: skip
    ax.set_facecolor("0.92")  # empty cells: no finished trial
    ax.grid(False)
    mid = 0.5 * (finite.min() + finite.max())
    if grid.size <= 200:
        for (i, j), value in np.ndenumerate(grid):
            n_lost = int(lost_cells.get((row_values[i], col_values[j]), 0))
            mark = f"✕{n_lost}" if n_lost else ""
            if np.isfinite(value):
                text = f"{value:.3f}" + (f"\n{mark}" if mark else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                        color="white" if value < mid else "black")  # fmt: skip
            elif mark:
                ax.text(j, i, mark, ha="center", va="center", fontsize=7, color="#C00000")
    ax.set_xticks(range(len(col_values)), [format_value(float(c)) for c in col_values])
    ax.set_yticks(range(len(row_values)), [format_value(float(r)) for r in row_values])
    ax.set_xlabel("total steps T")
    ax.set_ylabel("K (steps between feature updates)" if rows == "k" else "feature updates N")
    ax.spines[["top", "right"]].set_visible(True)
    return image
