"""Groups of trials that a figure or a fit compares, and their K=1 / K=∞ reference trials.

A *group* is all usable trials that share every config key except `k`, `seed` and the one-shot
`one_shot_at` (and the study). In a K sweep that is one curve of accuracy against N; in a
phase-diagram study each `total_steps` is its own group, so each T gets its own fit. The
reference levels are read from N: N = 0 is K=∞ (θ_s never moved), N = T − 1 is K=1 (SGD;
θ_s moves before every step but the first, and never after the last).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._schema import SCHEDULE_KEYS, SWEEP_KEYS, group_keys, group_label, varying

LINEARISED, GAUSS_NEWTON, PLAIN = "linearised", "gauss_newton", "plain"
# Keys that say how a baseline was optimised, not which problem it solved.
OPTIMISATION_KEYS = frozenset(
    {"trainer", "optimizer", "lr", "momentum", "damping", "damping_mode", "solver", "batch_size",
     "reset_optimizer", "solve_to_convergence", "convergence_patience", "convergence_rtol",
     "convergence_atol", "lr_units",
     "cg_tol", "cg_max_iter", "exact_max_dim", *SCHEDULE_KEYS}
)  # fmt: skip


@dataclass(frozen=True)
class Group:
    """One group: its key values, a short label, and its trials."""

    key: dict
    label: str
    trials: pd.DataFrame


def usable(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that finished normally (not diverged, errored, running or pending)."""
    if "usable" not in trials.columns:
        return trials
    return trials[trials["usable"].astype(bool)]


def drawable(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials whose rows may be drawn as curves: finished or still running, not failed."""
    if "exclusion" not in trials.columns:
        return trials
    return trials[trials["exclusion"].isin(["", "in progress"]) & (trials["n_rows"] > 0)]


def diverged(trials: pd.DataFrame) -> pd.DataFrame:
    """Diverged trials, each counted once (a diverged duplicate is excluded as a duplicate)."""
    if "exclusion" not in trials.columns:
        return trials.iloc[:0]
    return trials[trials["exclusion"] == "diverged"]


def diverged_like(
    trials: pd.DataFrame, group: Group, drop: Iterable[str] = SWEEP_KEYS
) -> pd.DataFrame:
    """The diverged trials that belong to `group`: equal on its key but for the `drop` keys.

    A group is built from usable trials, so a K at which every seed diverged still belongs
    to the curve it would have extended; figures mark these and fits say they lack them.
    """
    return _same_key(diverged(trials), group.key, drop)


def sampled_keys(trials: pd.DataFrame, min_trials: int = 6) -> list[str]:
    """Config keys a searcher sampled from a continuous range (Optuna, random search).

    Such a key takes a new value in most trials, so grouping by it leaves one trial per
    group. It is numeric and positive, distinct in at least half of at least `min_trials`
    finished trials of one trainer, and not crossed with the other varying keys as a grid
    would be (a one-seed grid over damping alone is a grid, not a search).
    """
    subset = usable(trials)
    out: list[str] = []
    if "trainer" not in subset:
        return out
    for _, part in subset.groupby("trainer"):
        if len(part) < min_trials:
            continue
        keys = varying(part, group_keys(part, ("seed",)))
        for key in keys:
            values = pd.to_numeric(part[key], errors="coerce")
            if not (values.notna().all() and (values > 0).all()):
                continue
            if values.nunique() >= len(part) / 2 and not _crossed(part, key, keys):
                out.append(key)
    return list(dict.fromkeys(out))


def _crossed(part: pd.DataFrame, key: str, keys: list[str]) -> bool:
    """True when every value of `key` meets every value of each other varying key (a grid)."""
    others = [k for k in keys if k != key]
    if not others:
        return True
    for other in others:
        pairs = part[[key, other]].astype(str).drop_duplicates()
        if len(pairs) < part[key].nunique() * part[other].nunique(dropna=False):
            return False
    return True


def with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the generalisation gaps: ``acc_gap`` = train − test accuracy and
    ``loss_gap`` = test − train loss (where both sides were recorded)."""
    out = frame.copy()
    if {"train_acc", "test_acc"} <= set(frame.columns):
        out["acc_gap"] = frame["train_acc"].astype(float) - frame["test_acc"].astype(float)
    if {"train_loss", "test_loss"} <= set(frame.columns):
        out["loss_gap"] = frame["test_loss"].astype(float) - frame["train_loss"].astype(float)
    return out


def infinite_k(trials: pd.DataFrame) -> np.ndarray:
    """K per trial from the config, with K ≥ T as ∞ (the paper's convention)."""
    k = trials["k"].astype(float).to_numpy()
    return np.where(k >= trials["total_steps"].astype(float).to_numpy(), math.inf, k)


def n_updates(trials: pd.DataFrame) -> pd.Series:
    """N per trial: the final `feature_updates`, or ⌈T/K⌉ − 1 when it was never reported."""
    fallback = np.ceil(trials["total_steps"].astype(float) / infinite_k(trials)) - 1
    return trials["feature_updates"].astype(float).fillna(fallback)


def is_lazy(trials: pd.DataFrame) -> pd.Series:
    """K=∞ reference trials: linearised trials whose linearisation point never moved (N = 0).

    Read from N, not K, so the one-shot schedule with t = 0 counts too. Use on finished trials.
    """
    return (trials["trainer"] == LINEARISED) & (n_updates(trials) == 0)


def is_sgd_limit(trials: pd.DataFrame) -> pd.Series:
    """K=1 reference trials: linearised trials that moved θ_s before every step but the first
    (N = T − 1), i.e. SGD; and plain-trainer trials, which are that training itself (they
    enter a group only as a borrowed level, see ``borrowed_references``)."""
    every_step = n_updates(trials) >= trials["total_steps"].astype(float) - 1
    return ((trials["trainer"] == LINEARISED) & every_step) | (trials["trainer"] == PLAIN)


def groups(
    trials: pd.DataFrame,
    trainer: str,
    drop: Iterable[str] = SWEEP_KEYS,
    running: bool = False,
    include: Iterable[str] = (),
) -> list[Group]:
    """Usable trials of `trainer` (and running ones if `running`), grouped by all keys but `drop`.

    `include` names further exclusions whose trials join their groups (e.g. "diverged"), so
    that a figure counts every outcome, even where no trial of a group finished. Keys a
    searcher sampled (``sampled_keys``) never split groups: that would leave one trial per
    group.
    """
    subset = drawable(trials) if running else usable(trials)
    extra = set(include)
    if extra and "exclusion" in trials:
        subset = pd.concat([subset, trials[trials["exclusion"].isin(extra)]])
        subset.attrs = dict(trials.attrs)  # the roles say which columns are config
    subset = subset[subset["trainer"] == trainer] if "trainer" in subset else subset.iloc[:0]
    if subset.empty:
        return []
    keys = group_keys(subset, (*drop, *sampled_keys(trials)))
    label_keys = varying(subset, keys)
    out = []
    for values, frame in subset.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
        out.append(Group(key, group_label(key, label_keys), frame))
    return out


def _same_key(frame: pd.DataFrame, key: dict, ignore: Iterable[str]) -> pd.DataFrame:
    """Rows of `frame` whose values equal `key` on every key not in `ignore` (NaN equals NaN)."""
    skip = set(ignore)
    for name, value in key.items():
        if name in skip or name not in frame.columns:
            continue
        if isinstance(value, float) and math.isnan(value):
            frame = frame[frame[name].isna()]
        else:
            frame = frame[frame[name] == value]
    return frame


def borrowed_references(trials: pd.DataFrame, group: Group) -> tuple[pd.DataFrame, str]:
    """The K=∞ / K=1 trials a group lacks, from trials that solve the same problem.

    Looked for in this order, each with the group's config on every other key:
    1. the same study's trials on another schedule: a geometric or one-shot schedule has no
       K=1 trial of its own (and one-shot none at K=∞ unless t = 0), yet its limits are the
       same models, fixed features and SGD;
    2. another study given alongside (``python -m reports a b``): *borrowed*, and said so;
    3. for K=1 only, the plain trainer with the same optimizer and lr: K=1 *is* plain
       training (one-shot's t = T), so a plain SGD or Adam run is that level.
    Returns the trials and a note saying what came from where ('' when nothing was needed).
    """
    own = group.trials
    wanted = [(name, test) for name, test in (("K=∞", is_lazy), ("K=1", is_sgd_limit))
              if not test(own).any()]  # fmt: skip
    pool = usable(trials)
    if not wanted or "trainer" not in pool:
        return own.iloc[:0], ""
    pool = pool[~pool.index.isin(own.index)]
    lin = pool[pool["trainer"] == LINEARISED]
    same_study = _same_key(lin, group.key, SCHEDULE_KEYS)
    other_study = _same_key(lin, group.key, ("study", *SCHEDULE_KEYS))
    other_study = other_study[other_study["study"] != group.key.get("study")]
    plain = _same_key(pool[pool["trainer"] == PLAIN], group.key, ("trainer", *SCHEDULE_KEYS))
    parts, notes = [], []
    for name, test in wanted:
        found = same_study[test(same_study)]
        if len(found):
            where = ", ".join(sorted(set(found.get("schedule", pd.Series(["?"])).astype(str))))
            notes.append(f"{name} level from the schedule={where} trials of the same config")
        else:
            found = other_study[test(other_study)]
            if len(found):
                studies = ", ".join(sorted(set(found["study"].astype(str))))
                notes.append(f"{name} level borrowed from study {studies} (same config)")
            elif name == "K=1":
                found = plain[test(plain)]
                if len(found):
                    how = ", ".join(sorted(set(found.get("optimizer", pd.Series(["?"])))))
                    notes.append(f"K=1 level from plain {how} trials (K=1 is plain training)")
        if len(found):
            parts.append(found)
    if not parts:
        return own.iloc[:0], ""
    return pd.concat(parts), "; ".join(notes)


def matching_plain(trials: pd.DataFrame, key: dict, running: bool = False) -> pd.DataFrame:
    """Usable (or running) plain-trainer trials that solved the problem of the group `key`."""
    plain = drawable(trials) if running else usable(trials)
    if "trainer" not in plain:
        return plain.iloc[:0]
    plain = _same_key(plain[plain["trainer"] == PLAIN], key, OPTIMISATION_KEYS)
    if "lr" in key and "optimizer" in plain.columns and len(plain):
        # per optimizer, the baseline at the group's lr when there is one, else all of them
        same = plain["lr"] == key["lr"]
        has_same = same.groupby(plain["optimizer"]).transform("any")
        plain = plain[same | ~has_same]
    return plain


def baseline_label(trials: pd.DataFrame) -> str:
    """'plain adam, lr=0.001' for one plain baseline's trials."""
    first = trials.iloc[0]
    optimizer = first.get("optimizer", "")
    lr = first.get("lr", math.nan)
    return f"plain {optimizer}" + (f", lr={lr:g}" if isinstance(lr, float) and lr == lr else "")


def baselines(plain: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Plain trials split into baselines (all keys but the seed), each with a label."""
    if plain.empty:
        return []
    keys = [k for k in group_keys(plain, ("seed",)) if k != "study"]
    keys = varying(plain, keys)
    if not keys:
        return [(baseline_label(plain), plain)]
    return [(baseline_label(f), f) for _, f in plain.groupby(keys, dropna=False, sort=True)]
