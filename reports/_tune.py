"""Tuning per cell, selected on the validation split and never on the test set; the bracket rule.

A study that sweeps the learning rate (and, if asked, other keys) gives one untuned curve per
learning rate, and one shared learning rate favours whichever K it suits. The tuned view
picks, in each *cell*, the tuned value with the best mean validation accuracy over seeds
(``val_acc`` of each trial's final record). A cell is every config key but the seed and the
tuned keys: each K of iterative linearisation, each reference arm (plain Adam: its trainer and
optimizer), and each damping λ of Gauss-Newton (so GN's step η is tuned per λ).

Selection. A value is *usable* in a cell when none of its seeds diverged, none was stopped by
an early-stopping scheduler, and at least one finished with a validation accuracy. The pick is
the usable value with the best mean validation accuracy; exact ties go to the smaller value.
The curves and fits of the tuned view then show *test* accuracy at the picks.

The bracket rule (the README, "The bracket rule"). Each pick is classed
against the full grid of its cell (every value run there, finished or not), in this order:

1. ``edge-high``: the pick is the grid's largest value (a one-value grid is edge-high too):
   a larger value was never tried, so the optimum may lie beyond the grid.
2. ``stability-limited``: the next larger value diverged on at least one seed at this cell.
   The pick is as large as the cell can train: a fair pick, and itself a result.
3. ``undetermined``: the next larger value has no finished seed yet (running or errored), so
   whether it trains is unknown.
4. ``edge-low``: the pick is the grid's smallest value and the next larger trained and scored
   no better: the optimum may lie below the grid.
5. ``interior``: a smaller value exists and the next larger trained and scored no better.

A value stopped by the scheduler (ASHA) is never a candidate; for the class it counts as having
*scored no better* (it lost a race on validation accuracy), unless a seed of it diverged. With
several tuned keys each is classed along its own axis with the others held at the pick, and
``bracketed`` joins them (``lr: interior; momentum: edge-high``).

The pick's *margin* is its mean validation accuracy minus that of the best other usable value
(the runner-up), also in validation examples: margin × ``val_examples`` (a metric the trainer
records; older results lack it, and then the margin in examples is NaN, as ``Tuning.notes``
says). A margin of one or two examples is noise.

With an early-stopping scheduler the learning rates of each K and seed race each other and the
losers are STOPPED. When every value lost on some seed, each seed keeps the survivor of its
own race (the finished trial with the best validation accuracy); the class is then the most
severe over the seeds' survivors (edge-high, edge-low, undetermined, stability-limited,
interior) and the margin is not defined.

Old results without ``val_acc`` are refused, with the reason, rather than tuned on test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._load import STOPPED_REASON
from ._schema import config_keys, format_value

DEFAULT_TUNED = ("lr",)
TUNED = "val-tuned"  # what a tuned key's column says in the tuned view; its value is in __<key>
SELECTOR = "val_acc"
VAL_EXAMPLES = "val_examples"  # int metric: the number of validation examples of the trial

EDGE_HIGH, EDGE_LOW = "edge-high", "edge-low"
STABILITY_LIMITED, INTERIOR, UNDETERMINED = "stability-limited", "interior", "undetermined"
# most severe first: the class of several picks (per-seed survivors) is the first present
SEVERITY = (EDGE_HIGH, EDGE_LOW, UNDETERMINED, STABILITY_LIMITED, INTERIOR)
EDGES = (EDGE_HIGH, EDGE_LOW)

# Status of one grid value in a cell, for the bracket rule.
USABLE, DIVERGED, STOPPED, UNFINISHED = "usable", "diverged", "stopped", "unfinished"

# Gauss-Newton per λ: a λ whose tuned final train accuracy is more than this below the best λ's
# (same line) is under-trained: its test accuracy says nothing about generalisation.
UNDERTRAINED_GAP = 0.05
GAUSS_NEWTON = "gauss_newton"

BRACKET_RULE = (
    "each pick is classed against its cell's full grid: *edge-high* when it is the grid's "
    "largest value (a larger one was never tried); *stability-limited* when the next larger "
    "value diverged on some seed (the pick is as large as that cell can train: fair, and a "
    "result); *undetermined* when the next larger value has no finished seed; *edge-low* when "
    "it is the grid's smallest value and the next larger trained and scored no better; "
    "*interior* otherwise (a smaller value exists and the next larger trained and scored no "
    "better). A value stopped by the early-stopping scheduler counts as having scored no "
    "better. Only interior and stability-limited picks are tuned"
)


def rule(keys: Sequence[str]) -> str:
    """The selection rule, in words, for the summary."""
    names = ", ".join(keys)
    return (f"in each cell (each K, and each value of every other config key but the seed: a "
            f"reference arm's trainer and optimizer, a Gauss-Newton damping λ), the {names} "
            f"with the best mean validation accuracy (`{SELECTOR}` of the final record) over "
            "seeds; ties go to the smaller value; a value at which any seed diverged, or that an "
            "early-stopping scheduler stopped on any seed, is not a candidate (if every value "
            "was stopped on some seed, each seed keeps the survivor of its own race). Test "
            "accuracy is never used to select; the tuned figures and fits show test accuracy "
            f"at the selected values. Bracket: {BRACKET_RULE}.")  # fmt: skip


@dataclass(frozen=True)
class Tuning:
    """The tuned view of a study: `trials` at the selected values, `selected` per cell.

    `trials` (the tuned view of K) is empty when no tuned key varies at a K of iterative
    linearisation, though other cells (plain arms, Gauss-Newton per λ) were tuned.
    """

    keys: tuple[str, ...]
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    refused: str = ""  # why there is no tuned view although the keys vary
    notes: tuple[str, ...] = ()  # what the summary must say about the selection (margins)
    picks: pd.DataFrame = field(default_factory=pd.DataFrame)  # every cell's picked trials


def tune_on_validation(trials: pd.DataFrame, keys: Sequence[str] = DEFAULT_TUNED) -> Tuning | None:
    """The tuned view, a refusal that says why, or None when no tuned key varies in any cell."""
    keys = tuple(k for k in keys if k in trials.columns)
    if not keys or trials.empty:
        return None
    # every run value belongs to its cell's grid, finished or not; a duplicate is no new value
    grid = trials[trials["exclusion"] != "duplicate"] if "exclusion" in trials else trials
    cell_keys = ["study", *(c for c in _config(grid) if c not in keys and c != "seed")]
    if not _varies(grid, cell_keys, keys):
        return None
    pool = grid[grid["exclusion"].isin(["", "diverged", STOPPED_REASON])]
    if SELECTOR not in pool.columns or pool.loc[pool["exclusion"] == "", SELECTOR].isna().all():
        return Tuning(keys, refused=(
            f"{', '.join(keys)} varies, but no trial recorded a validation accuracy "
            f"(`{SELECTOR}`, results written before the validation split): the per-K tuned "
            "view needs it and is not made, and test accuracy is never used in its place"))  # fmt: skip
    chosen, rows = [], []
    for values, cell in grid.groupby(cell_keys, dropna=False, sort=True):
        key = dict(zip(cell_keys, values if isinstance(values, tuple) else (values,), strict=True))
        pick, row = select(cell, keys)
        rows.append({**key, **row})
        if pick is not None:
            chosen.append(pick)
        else:  # nothing selectable: every value diverged, so the cell shows as diverged
            chosen.append(cell[cell["exclusion"] == "diverged"])
    notes = _notes(pool, keys)
    selected = _tidy(pd.DataFrame(rows), cell_keys)
    picks = pd.concat(chosen) if chosen else pool.iloc[:0]
    picks.attrs = dict(trials.attrs)
    lin = grid[grid["trainer"] == "linearised"] if "trainer" in grid else grid
    if lin.empty or not _varies(lin, cell_keys, keys):  # no tuned view of K, only per-cell picks
        return Tuning(keys, pool.iloc[:0].copy(), selected, notes=notes, picks=picks)
    view = picks.copy()
    for k in keys:
        view[f"__{k}"] = view[k]
        view[k] = TUNED
    view.attrs = dict(trials.attrs)
    return Tuning(keys, view, selected, notes=notes, picks=picks)


def _notes(pool: pd.DataFrame, keys: tuple[str, ...]) -> tuple[str, ...]:
    if VAL_EXAMPLES in pool.columns and pool[VAL_EXAMPLES].notna().any():
        return ()
    return (f"`margin_val_examples` is empty: these results do not record `{VAL_EXAMPLES}` "
            "(written before the trainer counted its validation examples), so the margin over "
            "the runner-up is given in accuracy only (`margin_val_acc`)",)  # fmt: skip


def _config(frame: pd.DataFrame) -> list[str]:
    return config_keys(frame)


def _varies(pool: pd.DataFrame, cell_keys: list[str], keys: tuple[str, ...]) -> bool:
    if pool.empty:
        return False
    counts = pool.groupby(cell_keys, dropna=False)[list(keys)].nunique(dropna=False)
    return bool((counts.max(axis=1) > 1).any())


@dataclass(frozen=True)
class _Score:
    """One grid value of a cell: its validation score over finished seeds and its outcomes."""

    values: tuple
    mean: float
    seeds: int  # finished seeds with a validation accuracy
    lost: int  # seeds that diverged
    stopped: int  # seeds the scheduler stopped
    other: int  # seeds neither finished, diverged nor stopped (running, errored, pending)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.stopped == 0 and self.seeds > 0

    @property
    def status(self) -> str:
        if self.lost:
            return DIVERGED
        if self.ok:
            return USABLE
        return STOPPED if self.stopped else UNFINISHED


def _scores(cell: pd.DataFrame, keys: tuple[str, ...]) -> list[_Score]:
    out = []
    for values, part in cell.groupby(list(keys), dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        done = part[part["exclusion"] == ""]
        val = done[SELECTOR].astype(float).dropna() if SELECTOR in done else pd.Series(dtype=float)
        lost = int((part["exclusion"] == "diverged").sum())
        stopped = int((part["exclusion"] == STOPPED_REASON).sum())
        other = len(part) - len(done) - lost - stopped
        mean = float(val.mean()) if len(val) else math.nan
        out.append(_Score(values, mean, len(val), lost, stopped, other))
    return out


def _rank(s: _Score) -> tuple:
    """Best mean validation accuracy first; exact ties to the smaller value (a stated rule)."""
    return (-s.mean, *(_order(v) for v in s.values))


def select(cell: pd.DataFrame, keys: tuple[str, ...]) -> tuple[pd.DataFrame | None, dict]:
    """The trials at the chosen values of one cell, and the cell's row of ``selected.csv``."""
    scores = _scores(cell, keys)
    candidates = sorted((s for s in scores if s.ok), key=_rank)
    listed = "; ".join(_describe(keys, s) for s in scores)
    row: dict = {"candidates": listed, "n_candidates": len(candidates), "grid_size": len(scores)}
    if not candidates and any(s.stopped for s in scores):
        return _survivors(cell, keys, scores, row)
    if not candidates:
        why = ("every value diverged on some seed" if any(s.lost for s in scores)
               else "no finished seed with a validation accuracy")  # fmt: skip
        return None, row | {k: math.nan for k in keys} | {
            "bracketed": "",
            "note": f"nothing selected: {why}",
        }
    best = candidates[0]
    tied = [s for s in candidates if s.mean == best.mean]
    mask = _at(cell, keys, best.values)
    pick = cell[mask & (cell["exclusion"] == "").to_numpy()]
    row |= dict(zip(keys, best.values, strict=True))
    row |= {"val_acc_mean": best.mean, "seeds": best.seeds,
            "test_acc_mean": _mean(pick, "test_acc"), "train_acc_mean": _mean(pick, "train_acc"),
            "note": f"tie among {len(tied)} values, smaller taken" if len(tied) > 1 else ""}  # fmt: skip
    row |= _bracket_columns(scores, keys, [best.values])
    row |= _margin(pick, best, candidates[1] if len(candidates) > 1 else None, keys)
    if len(scores) == 1:
        row["note"] = "; ".join(x for x in (row["note"], "one value in the grid: not tuned") if x)
    return pick, row


def _at(cell: pd.DataFrame, keys: tuple[str, ...], values: tuple) -> np.ndarray:
    mask = np.ones(len(cell), dtype=bool)
    for k, v in zip(keys, values, strict=True):
        mask &= (cell[k] == v).to_numpy()
    return mask


def _mean(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].astype(float).mean()) if column in frame and len(frame) else math.nan


def _margin(pick: pd.DataFrame, best: _Score, runner: _Score | None, keys: tuple[str, ...]) -> dict:
    """The pick's lead over the runner-up, in accuracy and in validation examples."""
    examples = math.nan
    if VAL_EXAMPLES in pick and pick[VAL_EXAMPLES].notna().any():
        examples = float(pick[VAL_EXAMPLES].astype(float).median())
        examples = examples if examples > 0 else math.nan
    out: dict = {f"runner_up_{k}": math.nan for k in keys}
    out |= {"margin_val_acc": math.nan, VAL_EXAMPLES: examples, "margin_val_examples": math.nan}
    if runner is None:
        return out
    margin = best.mean - runner.mean
    out |= {f"runner_up_{k}": v for k, v in zip(keys, runner.values, strict=True)}
    out |= {"margin_val_acc": margin, "margin_val_examples": margin * examples}
    return out


def bracket_class(grid: Mapping[object, str], pick: object) -> str:
    """The class of `pick` against `grid` (value → USABLE, DIVERGED, STOPPED or UNFINISHED)."""
    order = sorted(grid, key=_order)
    i = order.index(pick)
    if i == len(order) - 1:
        return EDGE_HIGH
    after = grid[order[i + 1]]
    if after == DIVERGED:
        return STABILITY_LIMITED
    if after == UNFINISHED:
        return UNDETERMINED
    return EDGE_LOW if i == 0 else INTERIOR  # usable, or stopped: it scored no better


def _bracket_columns(scores: list[_Score], keys: tuple[str, ...], picks: list[tuple]) -> dict:
    """``bracketed`` (and ``next_larger_<key>``) for the picks of one cell."""
    per_key, nexts = [], {}
    for j, key in enumerate(keys):
        classes = []
        for values in picks:
            # this key's axis, the other tuned keys held at the pick
            axis = {s.values[j]: s.status for s in scores
                    if all(s.values[i] == values[i] for i in range(len(keys)) if i != j)}  # fmt: skip
            classes.append(bracket_class(axis, values[j]))
            order = sorted(axis, key=_order)
            at = order.index(values[j])
            nexts[f"next_larger_{key}"] = order[at + 1] if at + 1 < len(order) else math.nan
        per_key.append(next(c for c in SEVERITY if c in classes))
    if len(picks) > 1:  # per-seed survivors: several picks, no single next value
        nexts = {k: math.nan for k in nexts}
    text = per_key[0] if len(keys) == 1 else "; ".join(
        f"{k}: {c}" for k, c in zip(keys, per_key, strict=True))  # fmt: skip
    return {"bracketed": text, **nexts}


def is_edge(bracketed: object) -> bool:
    """True when a ``bracketed`` entry names an edge class (for any tuned key)."""
    return isinstance(bracketed, str) and any(e in bracketed for e in EDGES)


def _survivors(
    cell: pd.DataFrame, keys: tuple[str, ...], scores: list[_Score], row: dict
) -> tuple[pd.DataFrame | None, dict]:
    """Each seed's winner of its scheduler race: its finished trial with the best val_acc."""
    done = cell[cell["exclusion"] == ""]
    if done.empty or SELECTOR not in done:
        return None, row | {k: math.nan for k in keys} | {
            "bracketed": "",
            "note": "nothing selected: no survivor",
        }
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
    survivors = sorted({tuple(r) for r in pick[list(keys)].itertuples(index=False)})
    row |= {"val_acc_mean": float(pick[SELECTOR].mean()), "seeds": len(pick),
            "test_acc_mean": _mean(pick, "test_acc"), "train_acc_mean": _mean(pick, "train_acc"),
            "note": "every value was stopped on some seed: each seed keeps the survivor of its "
                    "own race (" + "; ".join(f"{k} {'/'.join(format_value(x) for x in v)}"
                                             for k, v in chosen.items()) + "); no margin"}  # fmt: skip
    row |= _bracket_columns(scores, keys, survivors)
    row |= {f"runner_up_{k}": math.nan for k in keys}
    row |= {"margin_val_acc": math.nan, VAL_EXAMPLES: math.nan, "margin_val_examples": math.nan}
    return pick, row


def _order(value: object) -> tuple:
    try:
        return (0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(value))


def _describe(keys: tuple[str, ...], s: _Score) -> str:
    name = ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, s.values, strict=True))
    seeds = f"{s.seeds} seed{'s' * (s.seeds != 1)}"
    score = f"val {s.mean:.4f} ({seeds})" if np.isfinite(s.mean) else "no val"
    return (f"{name}: {score}" + (f", {s.lost} diverged" if s.lost else "")
            + (f", {s.stopped} stopped by the scheduler" if s.stopped else "")
            + (f", {s.other} not finished" if s.other else ""))  # fmt: skip


def _tidy(selected: pd.DataFrame, cell_keys: list[str]) -> pd.DataFrame:
    """Only the cell keys that tell cells apart, study and trainer and K first."""
    if selected.empty:
        return selected
    shown = [k for k in cell_keys if k in ("study", "trainer", "k") or selected[k].nunique() > 1]
    rest = [c for c in selected.columns if c not in cell_keys]
    order = [c for c in ("study", "trainer", "optimizer") if c in shown]
    order += [c for c in shown if c not in order and c != "k"] + (["k"] if "k" in shown else [])
    return selected[[*order, *rest]].sort_values(order, ignore_index=True)


# ---- Gauss-Newton: η per λ -------------------------------------------------------------------
def gauss_newton_by_damping(
    trials: pd.DataFrame, keys: Sequence[str] = DEFAULT_TUNED
) -> pd.DataFrame:
    """Gauss-Newton's tuned view per damping λ: the η picked on validation, its class, train
    and test accuracy, and the outcome: ``matched``, ``under-trained`` or ``diverged``.

    A λ is *diverged* when every η diverged there (nothing to pick); *under-trained* when its
    pick's mean final train accuracy is more than ``UNDERTRAINED_GAP`` below the best λ's of the
    same line (the other config keys); otherwise *matched*. Only between matched λ is a jump in
    test accuracy a generalisation effect. Empty when no GN cell sweeps a tuned key over λ.
    """
    return gauss_newton_tuned(trials, keys)[0]


def gauss_newton_tuned(
    trials: pd.DataFrame, keys: Sequence[str] = DEFAULT_TUNED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``gauss_newton_by_damping``'s table, the picked trials behind it)."""
    none = (pd.DataFrame(), pd.DataFrame())
    if "trainer" not in trials or "damping" not in trials:
        return none
    gn = trials[trials["trainer"] == GAUSS_NEWTON]
    if gn.empty or gn["damping"].nunique() < 2:
        return none
    tuning = tune_on_validation(gn, keys)
    if tuning is None or tuning.refused or tuning.selected.empty:
        return none
    table = tuning.selected.copy()
    if "damping" not in table:
        return none
    config = {*config_keys(trials), "study"} - {"trainer", "k", "damping", *keys}
    line = [c for c in table.columns if c in config]  # the other keys that tell lines apart
    table["n_diverged"] = [
        int(_same(gn[gn["exclusion"] == "diverged"], row, [*line, "damping"]).shape[0])
        for _, row in table.iterrows()
    ]
    table["acc_gap"] = table["train_acc_mean"] - table["test_acc_mean"]
    if line:
        best = table.groupby(line, dropna=False)["train_acc_mean"].transform("max")
    else:
        best = pd.Series(table["train_acc_mean"].max(), index=table.index)
    under = table["train_acc_mean"] < best - UNDERTRAINED_GAP
    picked = table[list(keys)].notna().all(axis=1)
    unpicked = np.where(table["n_diverged"] > 0, "diverged", "no pick")
    table["outcome"] = np.where(picked, np.where(under, "under-trained", "matched"), unpicked)
    table["best_train_acc"] = best
    return table.sort_values([*line, "damping"], ignore_index=True), tuning.picks


def _same(frame: pd.DataFrame, row: pd.Series, columns: list[str]) -> pd.DataFrame:
    for c in columns:
        if c in frame:
            value = row[c]
            frame = frame[frame[c].isna()] if pd.isna(value) else frame[frame[c] == value]
    return frame


UNDERTRAINED_RULE = (
    f"a λ is *under-trained* when the final train accuracy at its tuned η is more than "
    f"{UNDERTRAINED_GAP * 100:g} percentage points below the best λ's (same line), and "
    "*diverged* when every η "
    "diverged there; only between *matched* λ is a jump in test accuracy a generalisation "
    "effect rather than an optimisation one"
)
