"""``summary.md``: what was run, what was left out and why, the figures, the fits, the numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ._compare import schedule_comparison
from ._config import CI_LEVEL
from ._fit import ABOVE, BELOW, MODEL
from ._groups import infinite_k, usable
from ._load import ABOVE_INITIAL, OUTCOME_RULE, STOPPED_REASON
from ._schema import Status, config_keys, format_value, group_keys, group_label, varying
from ._tune import (
    EDGE_HIGH,
    STABILITY_LIMITED,
    UNDERTRAINED_RULE,
    UNDETERMINED,
    Tuning,
    gauss_newton_by_damping,
    is_edge,
    rule,
)

FINAL_METRICS = ("test_acc", "test_loss", "val_acc", "train_acc", "train_loss")
LISTED_TRIALS = 20  # trial ids listed per exclusion reason before "and n more"
FIGURE_TITLES = {
    "feature_updates": "Accuracy, loss and generalisation gap against the number of feature "
    "updates N (each learning rate as run)",
    "feature_updates_tuned": "The same at the learning rate selected per K on validation",
    "matched_train_loss": "Test accuracy at matched training loss",
    "phase_diagram": "Phase diagram: final test accuracy over T × K",
    "training_curves": "Training curves per K, feature updates marked",
    "lr": "Accuracy, loss and generalisation gap against the learning rate",
    "damping": "Gauss-Newton: accuracy, loss and generalisation gap against damping λ",
    "proxy_vs_measure": "Proxy N against measured feature learning (kernel distance)",
}


def final_metrics(trials: pd.DataFrame) -> pd.DataFrame:
    """Per config group (every key but the seed), over usable trials: seeds, mean and std."""
    done = usable(trials)
    keys = ["study", *(k for k in config_keys(done) if k != "seed")]
    shown = list(dict.fromkeys(["study", "trainer", "k", *varying(done, keys)]))
    shown = [k for k in shown if k in done.columns]
    metrics = [m for m in FINAL_METRICS if m in done.columns]
    rows = []
    for _, part in done.groupby(keys, dropna=False, sort=True):
        row = {k: part[k].iloc[0] for k in shown}
        row["N"] = part["feature_updates"].mean() if "feature_updates" in part else math.nan
        row["seeds"] = len(part)
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = part[m].mean(), part[m].std(ddof=1)
        if "wall_s" in part:
            row["wall_s_mean"] = part["wall_s"].mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = [c for c in ("study", "trainer", *shown[3:], "k") if c in table.columns]
    return table.sort_values(order, ignore_index=True)


def render_summary(
    trials: pd.DataFrame,
    fits: pd.DataFrame,
    correlations: pd.DataFrame,
    figures: Mapping[str, Sequence[Path]],
    skipped: Mapping[str, str],
    out: Path,
    dirs: Sequence[Path],
    tuning: Tuning | None = None,
    match_train_loss: float | None = None,
) -> str:
    """The markdown text of ``summary.md`` (figure links relative to `out`)."""
    studies = ", ".join(sorted(set(trials["study"]))) if len(trials) else "(none)"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# Report: {studies}\n",
        f"Generated {when} by `python -m reports` from "
        + ", ".join(f"`{d}`" for d in dirs)
        + ".\n",
        _trials_section(trials),
        _per_group_section(trials),
        _tuning_section(tuning),
        _damping_section(trials, tuning),
        _figures_section(figures, skipped, out, match_train_loss),
        _fits_section(fits),
        _schedules_section(trials),
        _measure_section(correlations, skipped),
        _finals_section(trials),
    ]
    return "\n".join(parts)


# ---- sections ----------------------------------------------------------------------------
def _trials_section(trials: pd.DataFrame) -> str:
    lines = ["## Trials\n"]
    rows = []
    for study, t in trials.groupby("study", sort=True):
        reasons = t["exclusion"].where(t["exclusion"] != "", "used")
        counts = reasons.str.replace(r"stopped early.*", "stopped early", regex=True).value_counts()
        rows.append({"study": study, "trials": len(t), **counts.to_dict()})
    table = pd.DataFrame(rows).fillna(0)
    cols = ["study", "trials", "used", "diverged", "duplicate", "stopped by the scheduler",
            "errored", "in progress", "pending", "stopped early"]  # fmt: skip
    cols += [c for c in table.columns if c not in cols]
    table = table.reindex(columns=cols, fill_value=0)
    lines.append(markdown_table(table, ints=cols[1:]))
    lines.append(
        "\n*used* trials finished normally and enter the fits and final metrics. All others are "
        "excluded from both: errored trials always, running and pending ones until they finish. "
        "Diverged trials are an outcome: every figure marks them (✕ at the panel floor, counted "
        "in the legend) and a fit made without them says so. A *duplicate* has every config "
        "column equal to another trial's, seed included (K ≥ T is K=∞; a trainer that ignores K "
        "has K=1): it is the same trial, counted once and never as an extra seed. Trials "
        "*stopped by the scheduler* lost an early-stopping tuning procedure (ASHA): they are "
        "part of the tuning, never of a curve or fit. Curves of running trials still appear in "
        "the training-curve figure.\n"
    )
    lines.append(f"Outcome rule: {OUTCOME_RULE}.\n")
    if "divergence" in trials:
        relabelled = int((trials["divergence"] == ABOVE_INITIAL).sum())
        if relabelled:
            lines.append(f"{relabelled} trial{'s' * (relabelled != 1)} counted as diverged by "
                         "this rule (final train loss above initial; see `divergence` in the "
                         "trial table).\n")  # fmt: skip
    if "peak_loss_ratio" in trials:
        spikes = trials[(trials["exclusion"] == "") & (trials["peak_loss_ratio"] > 1)]
        if len(spikes):
            lines.append(f"{len(spikes)} finished trial{'s' * (len(spikes) != 1)} had a "
                         "training-loss spike above the initial loss and recovered "
                         f"(`peak_loss_ratio` > 1, largest "
                         f"{spikes['peak_loss_ratio'].max():.3g}).\n")  # fmt: skip
    by_trainer = outcome_counts(trials)
    if not by_trainer.empty:
        lines.append("Per trainer (the counts the figures' legends give):\n")
        lines.append(markdown_table(by_trainer, ints=OUTCOMES) + "\n")
    excluded = trials[trials["exclusion"] != ""]
    for reason, t in excluded.groupby("exclusion", sort=True):
        ids = ", ".join(f"`{i}`" for i in t["trial_id"].head(LISTED_TRIALS))
        more = f" and {len(t) - LISTED_TRIALS} more" if len(t) > LISTED_TRIALS else ""
        lines.append(f"- **{reason}** ({len(t)}): {ids}{more}")
    errored = excluded[excluded["status"] == Status.ERROR]
    if len(errored) and "error" in errored.columns:
        for _, row in errored.dropna(subset=["error"]).head(5).iterrows():
            first = str(row["error"]).strip().splitlines()[-1:] or [""]
            lines.append(f"  - `{row['trial_id']}`: {first[0][:200]}")
    return "\n".join(lines) + "\n"


OUTCOMES = ("finished", "diverged", "stopped by the scheduler", "running", "other")


def outcome_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Per study and trainer: finished (used), diverged, stopped, running, other (errored,
    pending, stopped early); duplicates are copies, counted nowhere."""
    if trials.empty or "trainer" not in trials:
        return pd.DataFrame()
    t = trials[trials["exclusion"] != "duplicate"]
    kind = t["exclusion"].map({"": "finished", "diverged": "diverged",
                               STOPPED_REASON: "stopped by the scheduler",
                               "in progress": "running"}).fillna("other")  # fmt: skip
    table = (t.assign(outcome=kind).groupby(["study", "trainer", "outcome"]).size()
             .unstack(fill_value=0).reindex(columns=list(OUTCOMES), fill_value=0).reset_index())  # fmt: skip
    table.columns.name = None
    if table["study"].nunique() == 1:
        table = table.drop(columns="study")
    return table


def _per_group_section(trials: pd.DataFrame) -> str:
    """Diverged trials and dropped duplicates, per group (every config key but K, seed, t)."""
    lost = trials[trials["exclusion"].isin(["diverged", "duplicate"])]
    if lost.empty:
        return "## Diverged trials and duplicates per group\n\nNone.\n"
    keys = [k for k in group_keys(trials) if k in trials.columns]
    label_keys = varying(trials, keys)
    rows = []
    for values, part in lost.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
        bad, copies = part[part["exclusion"] == "diverged"], part[part["exclusion"] == "duplicate"]
        ks = sorted(set(infinite_k(bad))) if len(bad) else []
        seeds = sorted(set(bad["seed"])) if "seed" in bad and len(bad) else []
        ids = ", ".join(f"`{i}`" for i in bad["trial_id"].head(LISTED_TRIALS))
        more = f" and {len(bad) - LISTED_TRIALS} more" if len(bad) > LISTED_TRIALS else ""
        rows.append({
            "group": group_label(key, label_keys),
            "diverged": len(bad),
            "at K": ", ".join(format_value(float(k)) for k in ks) or "–",
            "seeds": ", ".join(format_value(v) for v in seeds) or "–",
            "diverged trials": (ids + more) or "–",
            "duplicates dropped": len(copies),
        })  # fmt: skip
    return "\n".join([
        "## Diverged trials and duplicates per group\n",
        "A group is every config key but K, the seed and the one-shot t. Diverged trials are "
        "marked on the figures and are not points of any fit; duplicates are copies of a trial "
        "that was kept (its id is in the `duplicate_of` column of the trial table).\n",
        markdown_table(pd.DataFrame(rows), ints=("diverged", "duplicates dropped")),
    ]) + "\n"  # fmt: skip


def _tuning_section(tuning: Tuning | None) -> str:
    lines = ["## Learning rate tuned per K on validation\n"]
    if tuning is None:
        return "\n".join([*lines, "Not tuned: no tuned key takes several values at one K.\n"])
    if tuning.refused:
        return "\n".join([*lines, f"Not tuned: {tuning.refused}.\n"])
    lines.append(f"Rule: {rule(tuning.keys)}\n")
    if tuning.trials.empty:
        lines.append("No tuned view of K: no tuned key varies at a K of iterative "
                     "linearisation; the cells below (reference arms, Gauss-Newton per λ) "
                     "were tuned on their own.\n")  # fmt: skip
    selected = tuning.selected
    lines += _bracket_lines(selected)
    lines += [f"Note: {n}.\n" for n in tuning.notes]
    lines.append("Selected values (also in `selected.csv`); *bracketed* is the pick's class; "
                 "*margin* is its lead over the runner-up in validation accuracy and, where "
                 "recorded, in validation examples; *candidates* lists every value with its "
                 "mean validation accuracy:\n")  # fmt: skip
    table = selected.copy()
    for col in ("val_acc_mean", "test_acc_mean", "train_acc_mean", "margin_val_acc"):
        if col in table:
            table[col] = table[col].map(lambda v: f"{v:.4f}" if np.isfinite(v) else "–")
    if "margin_val_examples" in table:
        table["margin_val_examples"] = table["margin_val_examples"].map(
            lambda v: f"{v:.1f}" if np.isfinite(v) else "–"
        )
    if "study" in table and table["study"].nunique() == 1:
        table = table.drop(columns="study")
    table = table.rename(columns={"val_acc_mean": "val acc (mean)",
                                  "test_acc_mean": "test acc at selection (mean)",
                                  "train_acc_mean": "train acc (mean)",
                                  "margin_val_acc": "margin (val acc)",
                                  "margin_val_examples": "margin (val examples)"})  # fmt: skip
    hidden = ("n_candidates", "grid_size", "val_examples")
    table = table.drop(columns=[c for c in table if c in hidden or c.startswith("next_larger_")])
    return "\n".join([*lines, markdown_table(table)]) + "\n"


def _cell_name(row: pd.Series) -> str:
    """'linearised K=25' or 'plain adam' or 'gauss_newton λ=0.01' for one row of selected."""
    parts = [str(row.get("trainer", ""))]
    if row.get("trainer") == "plain" and "optimizer" in row:
        parts.append(str(row["optimizer"]))
    elif row.get("trainer") == "gauss_newton" and "damping" in row:
        parts.append(f"λ={format_value(row['damping'])}")
    elif "k" in row:
        parts.append(f"K={format_value(float(row['k']))}")
    skip = {"trainer", "optimizer", "damping", "k", "study"}
    keys = [c for c in row.index if c in _CELL_EXTRA and c not in skip]
    parts += [f"{c}={format_value(row[c])}" for c in keys]
    return " ".join(p for p in parts if p)


_CELL_EXTRA = ("total_steps", "batch_size", "schedule", "model", "dataset")


def _bracket_lines(selected: pd.DataFrame) -> list[str]:
    """Which cells are stability-limited, and a warning for every edge pick, in words."""
    if selected.empty or "bracketed" not in selected:
        return []
    lines = []
    limited = selected[selected["bracketed"].astype(str).str.contains(STABILITY_LIMITED)]
    if len(limited):
        names = ", ".join(_cell_name(r) for _, r in limited.iterrows())
        lines.append(f"**Stability-limited** (the next larger value diverged there, so the pick "
                     f"is as large as the cell can train): {names}.\n")  # fmt: skip
    else:
        lines.append("No cell is stability-limited.\n")
    edges = selected[selected["bracketed"].map(is_edge)]
    if len(edges):
        single = edges.get("grid_size", pd.Series(2, index=edges.index)) == 1
        parts = []
        for label, mask in (
            ("picked the grid's largest value (a larger one was never tried)",
             ~single & edges["bracketed"].astype(str).str.contains(EDGE_HIGH)),
            ("picked the grid's smallest value (a smaller one was never tried)",
             ~single & ~edges["bracketed"].astype(str).str.contains(EDGE_HIGH)),
            ("ran at a single value (nothing was tuned)", single),
        ):  # fmt: skip
            if mask.any():
                names = ", ".join(_cell_name(r) for _, r in edges[mask].iterrows())
                parts.append(f"{label}: {names}")
        lines.append(f"> **Warning: {len(edges)} pick{'s' * (len(edges) != 1)} at the edge of "
                     "the grid, not tuned.** " + "; ".join(parts) + ". The optimum may lie "
                     "outside the grid, so these cells' comparisons with the others are not "
                     "fair until the grid is extended past them.\n")  # fmt: skip
    open_cells = selected[selected["bracketed"].astype(str).str.contains(UNDETERMINED)]
    if len(open_cells):
        names = ", ".join(_cell_name(r) for _, r in open_cells.iterrows())
        lines.append(f"Undetermined (the next larger value has no finished seed yet): {names}.\n")
    unpicked = selected[selected["bracketed"].astype(str) == ""]
    if len(unpicked):
        names = ", ".join(_cell_name(r) for _, r in unpicked.iterrows())
        lines.append(f"Nothing selected (see the note): {names}.\n")
    return lines


def _damping_section(trials: pd.DataFrame, tuning: Tuning | None) -> str:
    """Gauss-Newton: η tuned per λ, train beside test, and which λ are matched."""
    keys = tuning.keys if tuning is not None and not tuning.refused else ()
    table = gauss_newton_by_damping(trials, keys) if keys else pd.DataFrame()
    if table.empty:
        return ""
    lines = ["## Gauss-Newton: step η tuned per damping λ on validation\n",
             f"Each λ is a cell of the rule above. Outcome: {UNDERTRAINED_RULE}.\n"]  # fmt: skip
    shown = pd.DataFrame({"λ": table["damping"].map(format_value)})
    for k in keys:
        shown[f"{k} (tuned)"] = table[k].map(format_value)
    shown["bracketed"] = table["bracketed"]
    for col, name in (("train_acc_mean", "train acc"), ("test_acc_mean", "test acc"),
                      ("acc_gap", "gap (train − test)")):  # fmt: skip
        shown[name] = table[col].map(lambda v: f"{v:.4f}" if np.isfinite(v) else "–")
    shown["diverged trials"] = table["n_diverged"]
    shown["outcome"] = table["outcome"]
    counts = table["outcome"].value_counts()
    said = ", ".join(f"{n} {o}" for o, n in counts.items())
    return "\n".join([*lines, markdown_table(shown), f"\nλ by outcome: {said}.\n"]) + "\n"


def _figures_section(
    figures: Mapping[str, Sequence[Path]],
    skipped: Mapping[str, str],
    out: Path,
    match_train_loss: float | None = None,
) -> str:
    lines = ["## Figures\n"]
    target = ("the worst final training loss among each group's non-diverged trials"
              if match_train_loss is None else f"{match_train_loss:g}")  # fmt: skip
    captions = {"matched_train_loss": f"Each trial read at the first record where its training "
                f"loss reaches the target ({target}); ▼ at the floor: never reached."}  # fmt: skip
    for name, title in FIGURE_TITLES.items():
        paths = figures.get(name, [])
        if paths:
            png = [p for p in paths if p.suffix == ".png"] or list(paths)
            links = ", ".join(f"[{p.name}]({_rel(p, out)})" for p in paths)
            lines.append(f"### {title}\n\nFiles: {links}\n")
            if name in captions:
                lines.append(captions[name] + "\n")
            lines += [f"![{title}]({_rel(p, out)})\n" for p in png if p.suffix in (".png", ".svg")]
        elif name in skipped:
            lines.append(f"### {title}\n\nNot drawn: {skipped[name]}.\n")
    return "\n".join(lines)


def _fits_section(fits: pd.DataFrame) -> str:
    level = f"{CI_LEVEL:.0%}"
    lines = [
        "## Fits: test accuracy against the number of feature updates N\n",
        f"Model: `{MODEL}`.\n",
        "The levels a_inf and a_1 are the means over seeds of the group's K=∞ and K=1 trials; "
        "(N₅₀, s) are fitted by least squares to the other trials. N_q recovers a fraction q of "
        "the gap between the levels: N_q = N₅₀·(q/(1−q))^(1/s). Brackets are "
        f"{level} percentile intervals from a bootstrap over seeds (trials resampled within each "
        "K, levels included). A threshold or bound is reported only inside the sampled N range "
        "(`n_min`–`n_max` in `fits.csv`); beyond it, it is censored: `< N_min` or `> N_max` in "
        "its flag column (`n50_flag`, `n50_lo_flag`, …), NaN in its value column, an arrow in "
        "the figure. A rejected fit reports no threshold; its figure shows the raw means with "
        "bootstrap bands. All values are in `fits.csv`.\n",
    ]
    if fits.empty:
        return "\n".join([*lines, "No group of finished linearised trials at several K to fit.\n"])
    ok, failed = fits[fits["fit_ok"].astype(bool)], fits[~fits["fit_ok"].astype(bool)]
    if len(ok):
        table = pd.DataFrame({
            "group": ok["group"],
            "a_inf (K=∞)": [_ci(r, "a_inf", "{:.4f}") for _, r in ok.iterrows()],
            "a_1 (K=1)": [_ci(r, "a_1", "{:.4f}") for _, r in ok.iterrows()],
            "N₅₀": [_threshold(r, "n50") for _, r in ok.iterrows()],
            "N₉₀": [_threshold(r, "n90") for _, r in ok.iterrows()],
            "slope s": [_ci(r, "slope", "{:.3g}") for _, r in ok.iterrows()],
            "rmse": ok["rmse"].map("{:.2g}".format),
            "trials": ok["n_trials"],
            "diverged (not in fit)": ok.get("n_diverged", pd.Series(0, index=ok.index))
            .fillna(0).astype(int),
            "N range": [f"{r['n_min']:g}–{r['n_max']:g}" for _, r in ok.iterrows()],
            "bootstrap ok": [f"{r['n_boot_ok']}/{r['n_boot']}" for _, r in ok.iterrows()],
        })  # fmt: skip
        if "view" in ok and ok["view"].nunique() > 1:
            table.insert(0, "view", ok["view"].map(VIEW_NAMES).fillna(ok["view"]).to_numpy())
        if "study" in ok and ok["study"].nunique() > 1:
            table.insert(0, "study", ok["study"].to_numpy())
        lines.append(markdown_table(table))
        notes = ok[ok["reason"].astype(str) != ""]
        lines += [f"\nNote for {_view(r)}{r['group']}: {r['reason']}." for _, r in notes.iterrows()]
        borrowed = ok[ok["levels_from"].astype(str) != "group"]
        lines += [f"\nLevels for {_view(r)}{r['group']}: {r['levels_from']}."
                  for _, r in borrowed.iterrows()]  # fmt: skip
    if len(failed):
        lines.append(f"\n### Fits that failed ({len(failed)})\n")
        lines += [f"- {r['study']} · {_view(r)}{r['group']}: {r['reason']}."
                  for _, r in failed.iterrows()]  # fmt: skip
    return "\n".join(lines) + "\n"


def _schedules_section(trials: pd.DataFrame) -> str:
    table = schedule_comparison(trials)
    if table.empty:
        return ""
    lines = ["## Non-uniform schedules against uniform at matched N\n",
             "Mean test accuracy over seeds at each N of the non-uniform schedule [95% bootstrap "
             "interval, from 3 seeds], beside the uniform schedule's mean at the same N (run, or "
             "interpolated in ln N between the two nearest uniform N; never extrapolated).\n"]  # fmt: skip
    shown = pd.DataFrame({
        "group": table["group"], "schedule": table["schedule"], "N": table["N"],
        "seeds": table["seeds"],
        "test acc": [f"{a:.4f}" + (f" [{lo:.4f}, {hi:.4f}]" if np.isfinite(lo) else "")
                     for a, lo, hi in zip(table["acc"], table["acc_lo"], table["acc_hi"],
                                          strict=True)],
        "uniform at N": [f"{v:.4f} ({how})" if np.isfinite(v) else how
                         for v, how in zip(table["uniform_acc"], table["uniform_at"], strict=True)],
        "difference": table["difference"].map(lambda v: f"{v:+.4f}" if np.isfinite(v) else "–"),
    })  # fmt: skip
    if table["study"].nunique() > 1:
        shown.insert(0, "study", table["study"])
    return "\n".join([*lines, markdown_table(shown)]) + "\n"


def _measure_section(correlations: pd.DataFrame, skipped: Mapping[str, str]) -> str:
    lines = ["## Proxy against measure\n"]
    if correlations.empty:
        reason = skipped.get("proxy_vs_measure", "no kernel_distance_init was recorded")
        return "\n".join([*lines, f"Skipped: {reason}.\n"])
    lines.append("Spearman's rank correlation between N (the proxy) and the final "
                 "`kernel_distance_init` (the measure), over single finished trials:\n")  # fmt: skip
    table = correlations.assign(
        spearman_rho=correlations["spearman_rho"].map(
            lambda v: f"{v:.3f}" if np.isfinite(v) else "–"
        ),
        p_value=correlations["p_value"].map(lambda v: f"{v:.2g}" if np.isfinite(v) else "–"),
    )[["study", "group", "n_trials", "spearman_rho", "p_value"]]
    return "\n".join([*lines, markdown_table(table)]) + "\n"


def _finals_section(trials: pd.DataFrame) -> str:
    lines = ["## Final metrics per config group\n",
             "Mean ± standard deviation over seeds of each metric's last value; N is the final "
             "number of feature updates.\n"]  # fmt: skip
    table = final_metrics(trials)
    if table.empty:
        return "\n".join([*lines, "No finished trial yet.\n"])
    shown = pd.DataFrame()
    for col in table.columns:
        if col.endswith("_std") or col.endswith("_mean"):
            continue
        shown[col] = table[col].map(format_value) if col != "seeds" else table[col]
    for m in FINAL_METRICS:
        if f"{m}_mean" in table:
            shown[m] = [f"{a:.4f} ± {b:.4f}" if np.isfinite(b) else f"{a:.4f}"
                        for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"], strict=True)]  # fmt: skip
    if "wall_s_mean" in table:
        shown["wall s"] = table["wall_s_mean"].map(lambda v: f"{v:.3g}")
    if shown["study"].nunique() == 1:
        shown = shown.drop(columns="study")
    return "\n".join([*lines, markdown_table(shown)]) + "\n"


# ---- helpers -----------------------------------------------------------------------------
VIEW_NAMES = {"fixed": "lr as run", "tuned": "lr tuned per K (val)"}


def _view(row: pd.Series) -> str:
    return "tuned view · " if row.get("view") == "tuned" else ""


def _threshold(row: pd.Series, name: str) -> str:
    """N_q with its CI inside the sampled N, or where it lies when censored (not reported)."""
    flag = str(row.get(f"{name}_flag", "") or "")
    if flag == BELOW:
        return f"< {row['n_min']:g} (below the sampled N)"
    if flag == ABOVE:
        return f"> {row['n_max']:g} (above the sampled N)"
    value = row.get(name, math.nan)
    if not np.isfinite(value):
        return "–"
    bounds = []
    for side in ("_lo", "_hi"):
        side_flag = str(row.get(f"{name}{side}_flag", "") or "")
        bound = row.get(f"{name}{side}", math.nan)
        if side_flag == BELOW:
            bounds.append(f"< {row['n_min']:g}")
        elif side_flag == ABOVE:
            bounds.append(f"> {row['n_max']:g}")
        elif bound is not None and np.isfinite(bound):
            bounds.append(f"{bound:.3g}")
    return f"{value:.3g}" + (f" [{bounds[0]}, {bounds[1]}]" if len(bounds) == 2 else "")


def _ci(row: pd.Series, name: str, fmt: str) -> str:
    value, lo, hi = row.get(name), row.get(f"{name}_lo"), row.get(f"{name}_hi")
    text = fmt.format(value)
    if lo is not None and hi is not None and np.isfinite([lo, hi]).all():
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def _rel(path: Path, out: Path) -> str:
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        return path.as_posix()


def markdown_table(frame: pd.DataFrame, ints: Sequence[str] = ()) -> str:
    """A GitHub-flavoured markdown table; `|` in cells escaped."""

    def cell(col: str, value: object) -> str:
        if col in ints:
            return str(int(value))
        text = format_value(value) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True)) + " |"
            for row in frame.itertuples(index=False)]  # fmt: skip
    return "\n".join([header, rule, *body])
