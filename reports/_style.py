"""The look shared by every figure: palette, fonts, axis labels, saving."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, LogNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from ._config import DPI, FORMATS
from ._errors import NothingToPlot
from ._schema import format_value
from ._tune import TUNED

__all__ = ["NothingToPlot"]  # re-exported: every figure module raises it from here

MINOR_TICK_DECADES = 4  # wider log axes drop minor ticks (clutter, and slow to draw)
# Okabe & Ito (2008), colour-blind safe; yellow last, it is faint on white.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
LAZY_STYLE = {"linestyle": (0, (5, 2)), "linewidth": 1.3}  # K=∞ level
SGD_STYLE = {"linestyle": (0, (1, 1.5)), "linewidth": 1.6}  # K=1 level
PLAIN_STYLES = ((0, (6, 2, 1, 2)), (0, (6, 2, 1, 2, 1, 2)), (0, (2, 2, 6, 2)))
DIVERGED_MARKER = "X"  # a diverged trial, drawn at the floor of the axis it would be on
FLOOR_Y, FLOOR_STEP = 0.03, 0.045  # axes fraction of the first floor marker, and of each next
RC = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "savefig.dpi": DPI,
    "figure.dpi": 100,
}

# The six panels of every accuracy figure: the metric, and its panel label.
PANELS = (
    ("test_acc", "test accuracy"),
    ("train_acc", "train accuracy"),
    ("test_loss", "test"),
    ("train_loss", "train"),
    ("acc_gap", "accuracy gap, train − test"),
    ("loss_gap", "loss gap, test − train"),
)


@contextmanager
def paper_style():
    """Matplotlib settings for every figure, restored afterwards."""
    with plt.rc_context(RC):
        yield


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


K_CMAP: Colormap = ListedColormap(
    plt.get_cmap("viridis")(np.linspace(0, 0.88, 256))
)  # no faint yellow


def k_colours(ks: Iterable[float]) -> dict[float, tuple]:
    """A sequential colour per finite K on a log scale (dark = small K); black for K=∞."""
    finite = sorted({float(k) for k in ks if math.isfinite(k)})
    out: dict[float, tuple] = {math.inf: (0.0, 0.0, 0.0, 1.0)}
    if len(finite) <= 1:
        return out | {k: K_CMAP(0.4) for k in finite}
    norm = k_mappable(finite).norm
    return out | {k: K_CMAP(norm(k)) for k in finite}


def rank_colours(values: Iterable[float]) -> dict[float, tuple]:
    """A sequential colour per value by rank (for values that need not be positive)."""
    ordered = sorted({float(v) for v in values})
    span = max(len(ordered) - 1, 1)
    return {v: K_CMAP(i / span) for i, v in enumerate(ordered)}


def k_mappable(finite_ks: Sequence[float]) -> ScalarMappable:
    """The K colour scale, for a colour bar."""
    lo, hi = min(finite_ks), max(finite_ks)
    return ScalarMappable(LogNorm(lo, hi if hi > lo else lo * 10), K_CMAP)


def mark_floor(ax, xs: Iterable[float], c, left: Iterable[bool] | None = None,
               marker: str = DIVERGED_MARKER) -> int:  # fmt: skip
    """Mark trials that have no value on this axis (diverged, never reached a target) at its
    floor: x in data units, y a fixed fraction of the axes, stacked where x repeats. A `left`
    trial (N = 0 on a log axis) sits at the left edge. Returns how many were drawn."""
    xs = [float(x) for x in xs]
    left = [False] * len(xs) if left is None else list(left)
    placed = [(x, 0.0) for x, at_left in zip(xs, left, strict=True) if not at_left]
    if placed:  # the x range must hold them, though they carry no y value
        ax.update_datalim(placed, updatey=False)
        ax.autoscale_view(scaley=False)
    seen: dict[object, int] = {}
    floor = blended_transform_factory(ax.transData, ax.transAxes)
    # a line marker (|) is all edge: it takes the colour; a filled one gets a white rim
    filled = marker in Line2D.filled_markers
    width = 0.4 if filled else 1.2
    for x, at_left in zip(xs, left, strict=True):
        place = "left" if at_left else x
        y = FLOOR_Y + FLOOR_STEP * seen.get(place, 0)
        seen[place] = seen.get(place, 0) + 1
        transform, px = (ax.transAxes, 0.012) if at_left else (floor, x)
        rim = {"edgecolors": "white"} if filled else {}
        ax.scatter([px], [y], transform=transform, marker=marker, s=30, color=c,
                   linewidths=width, clip_on=False, zorder=6, **rim)  # fmt: skip
    return len(xs)


def floor_handle(label: str, marker: str = DIVERGED_MARKER) -> Line2D:
    """The legend entry for floor markers."""
    filled = marker in Line2D.filled_markers
    return Line2D([], [], color="0.3", marker=marker, ms=6, mec="white" if filled else None,
                  mew=0.4 if filled else 1.2, linestyle="none", label=label)  # fmt: skip


def loss_label(kind: str, loss_names: Sequence[str]) -> str:
    """'test loss (cross-entropy, nats)' and the like."""
    names = {str(n) for n in loss_names if isinstance(n, str)}
    if names == {"cross_entropy"}:
        return f"{kind} loss (cross-entropy, nats)"
    if names == {"mse"}:
        return f"{kind} loss (mean squared error)"
    return f"{kind} loss"


def log_axis(ax, axis: str = "x", values: Iterable[float] = ()) -> None:
    """Log scale with readable ticks.

    Narrow spans get ticks at 1, 2, 5 × 10ⁿ written as plain numbers; spans wider than
    MINOR_TICK_DECADES decades get powers of ten and no minor ticks (clutter, slow to draw).
    """
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    decades = np.log10(v.max() / v.min()) if len(v) else 0.0
    target = ax.xaxis if axis == "x" else ax.yaxis
    if decades > MINOR_TICK_DECADES:
        target.set_minor_locator(NullLocator())
    elif len(v) and v.min() >= 1e-3 and v.max() <= 1e6:
        plain_log_ticks(target, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,))


def plain_log_ticks(target, subs: Sequence[float] = (1.0,)) -> None:
    """Ticks of a log axis written as plain numbers (2, 5, 10, 20) rather than 2×10⁰."""
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    target.set_minor_formatter(NullFormatter())


def set_title(fig, text: str) -> None:
    """A figure title wrapped to the figure's width (about 14 characters per inch at 9 pt)."""
    width = int(fig.get_figwidth() * 14)
    fig.suptitle("\n".join(textwrap.wrap(text, width)) if len(text) > width else text)


def log_if_wide(ax, values: Iterable[float], axis: str = "y", ratio: float = 20.0) -> None:
    """Log scale on `axis` when the positive values span more than `ratio`."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    if len(v) and v.max() / v.min() > ratio:
        log_axis(ax, axis, v)


def constant_description(frame: pd.DataFrame, keys: Sequence[str]) -> str:
    """'digits, mlp, lr=0.05' from the keys that are constant in `frame`."""
    bare = {"dataset", "model", "loss", "optimizer"}
    parts = []
    for key in keys:
        if key in frame.columns and frame[key].nunique(dropna=False) == 1:
            value = frame[key].iloc[0]
            if value == TUNED:  # chosen per K: the figure's note says how, not a value
                continue
            text = format_value(value)
            parts.append(text if key in bare else f"{_short(key)}={text}")
    return ", ".join(parts)


def _short(key: str) -> str:
    return {"total_steps": "T", "batch_size": "batch", "damping": "λ"}.get(key, key)


def output_paths(out: str | Path, formats: Sequence[str], page: int = 0) -> list[Path]:
    """The files for figure `out` (suffix optional), page `page`, in each format."""
    out = Path(out)
    if out.suffix.lstrip(".") in FORMATS:
        out = out.with_suffix("")
    stem = out.name if page == 0 else f"{out.name}_{page + 1}"
    return [out.with_name(f"{stem}.{fmt}") for fmt in formats]


def save(fig, out: str | Path, formats: Sequence[str], page: int = 0) -> list[Path]:
    """Write `fig` in every format and close it."""
    paths = output_paths(out, formats, page)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=_metadata(path))
    plt.close(fig)
    return paths


def _metadata(path: Path) -> dict:
    # fixed metadata keeps re-rendered files byte-stable where the backend allows it
    if path.suffix == ".png":
        return {"Software": "ilstudy reports"}
    if path.suffix == ".svg":
        return {"Date": None}
    if path.suffix == ".pdf":
        return {"CreationDate": None}
    return {}


def pages(items: Sequence, per_page: int) -> list[Sequence]:
    """`items` in chunks of `per_page` (one page at least)."""
    return [items[i : i + per_page] for i in range(0, max(len(items), 1), per_page)]
