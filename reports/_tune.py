"""Per-K learning-rate tuning, selected on the validation split and never on the test set.

A study that sweeps the learning rate (and, if asked, other keys) at several K gives one
untuned curve per learning rate, and one shared learning rate favours whichever K it suits.
The tuned view picks, in each *cell* (every config key but the seed and the tuned keys, so
each K, trainer and optimizer on its own), the tuned value with the best mean validation
accuracy over seeds: ``val_acc`` of each trial's final record. Ties go to the smaller value.
A value at which any seed diverged is not a candidate (it is not a safe choice). The curves
and fits of the tuned view then show *test* accuracy at the chosen values.

With an early-stopping scheduler (``--scheduler asha``), the learning rates of each K and seed
race each other and the losers are STOPPED. A stopped trial is never a point of a curve; a
value stopped on any seed is not a candidate. When every value lost on some seed, each seed
keeps the survivor of its own race (the finished trial with the best validation accuracy).

Old results without ``val_acc`` are refused, with the reason, rather than tuned on test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._load import STOPPED_REASON
from ._schema import config_keys, format_value

DEFAULT_TUNED = ("lr",)
TUNED = "val-tuned"  # what a tuned key's column says in the tuned view; its value is in __<key>
SELECTOR = "val_acc"


def rule(keys: Sequence[str]) -> str:
    """The selection rule, in words, for the summary."""
    names = ", ".join(keys)
    return (f"for each K (and each value of every other config key but the seed), the {names} "
            f"with the best mean validation accuracy (`{SELECTOR}` of the final record) over "
            "seeds; ties go to the smaller value; a value at which any seed diverged, or that an "
            "early-stopping scheduler stopped on any seed, is not a candidate (if every value "
            "was stopped on some seed, each seed keeps the survivor of its own race). Test "
            "accuracy is never used to select; the tuned figures and fits show test accuracy "
            "at the selected values.")  # fmt: skip


@dataclass(frozen=True)
class Tuning:
    """The tuned view of a study: `trials` at the selected values, `selected` per cell."""

    keys: tuple[str, ...]
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    refused: str = ""  # why there is no tuned view although the keys vary


def tune_on_validation(trials: pd.DataFrame, keys: Sequence[str] = DEFAULT_TUNED) -> Tuning | None:
    """The tuned view, a refusal that says why, or None when no tuned key varies in any cell."""
    keys = tuple(k for k in keys if k in trials.columns)
    if not keys or trials.empty:
        return None
    pool = trials[trials["exclusion"].isin(["", "diverged", STOPPED_REASON])]
    cell_keys = ["study", *(c for c in _config(pool) if c not in keys and c != "seed")]
    # the tuned view is a view of K: it exists when a key varies at some K of IL
    lin = pool[pool["trainer"] == "linearised"] if "trainer" in pool else pool
    if lin.empty or not _varies(lin, cell_keys, keys):
        return None
    if SELECTOR not in pool.columns or pool.loc[pool["exclusion"] == "", SELECTOR].isna().all():
        return Tuning(keys, refused=(
            f"{', '.join(keys)} varies, but no trial recorded a validation accuracy "
            f"(`{SELECTOR}`, results written before the validation split): the per-K tuned "
            "view needs it and is not made, and test accuracy is never used in its place"))  # fmt: skip
    chosen, rows = [], []
    for values, cell in pool.groupby(cell_keys, dropna=False, sort=True):
        key = dict(zip(cell_keys, values if isinstance(values, tuple) else (values,), strict=True))
        pick, row = _select(cell, keys)
        rows.append({**key, **row})
        if pick is not None:
            chosen.append(pick)
        else:  # nothing selectable: every value diverged, so the K shows as diverged
            chosen.append(cell[cell["exclusion"] == "diverged"])
    view = pd.concat(chosen) if chosen else pool.iloc[:0]
    view = view.copy()
    for k in keys:
        view[f"__{k}"] = view[k]
        view[k] = TUNED
    view.attrs = dict(trials.attrs)
    selected = pd.DataFrame(rows)
    return Tuning(keys, view, _tidy(selected, cell_keys))


def _config(frame: pd.DataFrame) -> list[str]:
    return config_keys(frame)


def _varies(pool: pd.DataFrame, cell_keys: list[str], keys: tuple[str, ...]) -> bool:
    counts = pool.groupby(cell_keys, dropna=False)[list(keys)].nunique(dropna=False)
    return bool((counts.max(axis=1) > 1).any())


def _select(cell: pd.DataFrame, keys: tuple[str, ...]) -> tuple[pd.DataFrame | None, dict]:
    """The trials at the chosen values of one cell, and the cell's row of ``selected.csv``."""
    scores = []
    for values, part in cell.groupby(list(keys), dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        done = part[part["exclusion"] == ""]
        val = done[SELECTOR].astype(float).dropna() if SELECTOR in done else pd.Series(dtype=float)
        lost = int((part["exclusion"] == "diverged").sum())
        stopped = int((part["exclusion"] == STOPPED_REASON).sum())
        ok = lost == 0 and stopped == 0 and len(val) > 0
        mean = float(val.mean()) if len(val) else math.nan
        scores.append((values, mean, len(val), lost, ok, stopped))
    candidates = [s for s in scores if s[4]]
    listed = "; ".join(_describe(keys, v, m, n, d, st) for v, m, n, d, _, st in scores)
    row = {"candidates": listed, "n_candidates": len(candidates)}
    if not candidates and any(s[5] for s in scores):
        return _survivors(cell, keys, row)
    if not candidates:
        why = "every value diverged on some seed" if any(s[3] for s in scores) else "no val_acc"
        return None, row | {k: math.nan for k in keys} | {"note": f"nothing selected: {why}"}
    # best mean validation accuracy; exact ties to the smaller value (a plain, stated rule)
    best = min(candidates, key=lambda s: (-s[1], *(_order(v) for v in s[0])))
    tied = [s for s in candidates if s[1] == best[1]]
    mask = np.ones(len(cell), dtype=bool)
    for k, v in zip(keys, best[0], strict=True):
        mask &= (cell[k] == v).to_numpy()
    pick = cell[mask & (cell["exclusion"] == "").to_numpy()]
    row |= dict(zip(keys, best[0], strict=True))
    row |= {"val_acc_mean": best[1], "seeds": best[2],
            "test_acc_mean": float(pick["test_acc"].mean()) if "test_acc" in pick else math.nan,
            "note": f"tie among {len(tied)} values, smaller taken" if len(tied) > 1 else ""}  # fmt: skip
    return pick, row


def _survivors(
    cell: pd.DataFrame, keys: tuple[str, ...], row: dict
) -> tuple[pd.DataFrame | None, dict]:
    """Each seed's winner of its scheduler race: its finished trial with the best val_acc."""
    done = cell[cell["exclusion"] == ""]
    if done.empty or SELECTOR not in done:
        return None, row | {k: math.nan for k in keys} | {"note": "nothing selected: no survivor"}
    picks = []
    for _, seed in done.groupby("seed", sort=True):
        order = sorted(
            seed.index,
            key=lambda i: (-float(seed.at[i, SELECTOR]), *(_order(seed.at[i, k]) for k in keys)),
        )
        picks.append(seed.loc[[order[0]]])
    pick = pd.concat(picks)
    chosen = {k: sorted(set(pick[k]), key=_order) for k in keys}
    row |= {k: v[0] if len(v) == 1 else math.nan for k, v in chosen.items()}
    row |= {"val_acc_mean": float(pick[SELECTOR].mean()), "seeds": len(pick),
            "test_acc_mean": float(pick["test_acc"].mean()) if "test_acc" in pick else math.nan,
            "note": "every value was stopped on some seed: each seed keeps the survivor of its "
                    "own race (" + "; ".join(f"{k} {'/'.join(format_value(x) for x in v)}"
                                             for k, v in chosen.items()) + ")"}  # fmt: skip
    return pick, row


def _order(value: object) -> tuple:
    try:
        return (0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(value))


def _describe(
    keys: tuple[str, ...], values: tuple, mean: float, n: int, lost: int, stopped: int = 0
) -> str:
    name = ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values, strict=True))
    score = f"val {mean:.4f} ({n} seed{'s' * (n != 1)})" if np.isfinite(mean) else "no val"
    return (f"{name}: {score}" + (f", {lost} diverged" if lost else "")
            + (f", {stopped} stopped by the scheduler" if stopped else ""))  # fmt: skip


def _tidy(selected: pd.DataFrame, cell_keys: list[str]) -> pd.DataFrame:
    """Only the cell keys that tell cells apart, study and trainer and K first."""
    if selected.empty:
        return selected
    shown = [k for k in cell_keys if k in ("study", "trainer", "k") or selected[k].nunique() > 1]
    rest = [c for c in selected.columns if c not in cell_keys]
    order = [c for c in ("study", "trainer", "optimizer") if c in shown]
    order += [c for c in shown if c not in order and c != "k"] + (["k"] if "k" in shown else [])
    return selected[[*order, *rest]].sort_values(order, ignore_index=True)
