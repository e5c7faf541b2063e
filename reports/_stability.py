"""Issue 21's stability data: lr·λ_max against the edge 2, the loss jump at feature updates,
and which of the two preceded each divergence.

Gradient descent on a quadratic of curvature λ is stable only while lr·λ < 2, and a linear
model's curvature is fixed at its linearisation point θ_s (PAPER.md, "Stability"). The trials
record, as measures (NaN when not measured):

- ``sharpness``: the top eigenvalue λ_max of the Gauss-Newton matrix on a training probe;
- ``lr_sharpness``: lr·λ_max (÷ (1 + momentum) with momentum, so the edge is always 2); NaN
  for Adam and Gauss-Newton, whose steps are preconditioned;
- ``lr_sharpness_max``: the largest lr_sharpness since the previous record;
- ``lin_gap``: the network's loss minus the linear model's loss at the latest feature update;

and a per-phase dataset, ``results/phases/<trial_id>.parquet`` (one row per measured feature
update, the initial point included: step, feature_updates, sharpness, lr_sharpness, lin_gap,
loss_before, loss_after). Older studies have neither; their figures are skipped with a reason.

**Classification of a diverged trial** (:func:`classify`), from its records at or before its
last step (for IL the phase's curvature is measured at θ_s, when the phase begins, so the
record at which the trial diverged still holds a value set before it). Only finite values count:

- *edge* crossed: the largest lr·λ recorded (``lr_sharpness_max``, ``lr_sharpness``, and the
  phases' ``lr_sharpness``) is ≥ 2;
- *big gap*: the largest ``lin_gap`` at a feature update is ≥ GAP_FRACTION × the trial's
  training loss at step 0 (the jump alone takes the network as far up as the untrained network
  was; a negative gap, the network better than its linear model, destabilises nothing);
- the class is ``both``, ``lr·λ ≥ 2 before divergence`` or ``feature-update gap`` accordingly;
  ``neither`` when lr·λ was measured below 2 and the gap was measured (or the trial made no
  feature update, K=∞, so there was no gap) below the bar; otherwise ``not measured`` (no lr·λ
  for Adam or Gauss-Newton, or no gap recorded), never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._errors import ReportError
from ._groups import LINEARISED, OPTIMISATION_KEYS, infinite_k
from ._paths import metric_files, results_dir
from ._schema import SWEEP_KEYS, config_keys, file_roles, format_value, group_label, with_roles

SHARPNESS, LR_SHARPNESS, LR_SHARPNESS_MAX, LIN_GAP = (
    "sharpness", "lr_sharpness", "lr_sharpness_max", "lin_gap"
)  # fmt: skip
STABILITY_COLUMNS = (SHARPNESS, LR_SHARPNESS, LR_SHARPNESS_MAX, LIN_GAP)
EDGE = 2.0  # GD on a quadratic is stable only while lr·λ < 2
GAP_FRACTION = 1.0  # a feature-update jump this large, in units of the initial training loss
EDGE_CLASS = "lr·λ ≥ 2 before divergence"
GAP_CLASS = "feature-update gap"
BOTH_CLASS = "both"
NEITHER_CLASS = "neither"
UNMEASURED_CLASS = "not measured"
CLASSES = (EDGE_CLASS, GAP_CLASS, BOTH_CLASS, NEITHER_CLASS, UNMEASURED_CLASS)
CLASS_COLUMNS = {EDGE_CLASS: "n_edge", GAP_CLASS: "n_gap", BOTH_CLASS: "n_both",
                 NEITHER_CLASS: "n_neither", UNMEASURED_CLASS: "n_not_measured"}  # fmt: skip
IN_SCOPE = ("", "diverged")  # finished or diverged: a seed that ran its course
RULE = (
    f"a diverged trial is *{EDGE_CLASS}* when the largest finite lr·λ_max it recorded at or "
    f"before its last step is ≥ {EDGE:g}; *{GAP_CLASS}* when the largest loss jump at a feature "
    f"update (`lin_gap`, network minus linear model) is ≥ {GAP_FRACTION:g} × its training loss "
    f"at step 0; *{BOTH_CLASS}* when both hold; *{NEITHER_CLASS}* when lr·λ was measured below "
    f"{EDGE:g} and the gap below the bar (a trial with no feature update has no gap); "
    f"*{UNMEASURED_CLASS}* otherwise (Adam and Gauss-Newton have no lr·λ; a gap not recorded "
    "is not assumed small)"
)


# ---- reading ----------------------------------------------------------------------------------
def read_phases(dirs: Sequence[Path], trials: pd.DataFrame) -> pd.DataFrame:
    """The per-phase rows of every study in `dirs` (empty when none has a phases folder).

    Study names are relabelled as ``read_studies`` relabels them when two folders share one.
    A file that is not readable Parquet, or states an unknown role, is a ReportError.
    """
    names = set(trials["study"]) if "study" in trials else set()
    frames, roles = [], {}
    for path in dirs:
        folder = results_dir(Path(path)) / "phases"
        for file in metric_files(folder):
            try:
                table = pq.read_table(file)
            except (OSError, pa.ArrowException, ValueError) as exc:
                reason = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                raise ReportError(f"{file}: not a readable Parquet file ({reason})") from None
            roles |= file_roles(table.schema, file) or {}
            frame = table.to_pandas()
            if not {"trial_id", "step"} <= set(frame.columns):
                raise ReportError(f"{file}: not an ilstudy phases table (no trial_id or step)")
            if "study" not in frame:
                frame["study"] = Path(path).resolve().name
            # read_studies relabels a folder's study as "name (folder)" when two names clash
            frame["study"] = [f"{s} ({path})" if f"{s} ({path})" in names else s
                              for s in frame["study"]]  # fmt: skip
            frames.append(frame)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["study", "trial_id", "step"])
    out = pd.concat(frames, ignore_index=True, sort=False)
    return with_roles(out.sort_values(["study", "trial_id", "step"], ignore_index=True), roles)


def recorded(metrics: pd.DataFrame, phases: pd.DataFrame) -> bool:
    """Whether any record or phase row holds a finite sharpness or lr·λ."""
    for frame in (metrics, phases):
        for col in (SHARPNESS, LR_SHARPNESS, LR_SHARPNESS_MAX):
            if col in frame and np.isfinite(pd.to_numeric(frame[col], errors="coerce")).any():
                return True
    return False


def why_not_recorded(metrics: pd.DataFrame) -> str:
    """The reason given when no trial has a stability measure."""
    if not any(c in metrics for c in STABILITY_COLUMNS):
        return ("no sharpness or lr_sharpness columns: results written before the stability "
                "measures")  # fmt: skip
    return "no trial recorded a finite sharpness (stability probe off, or no measure step yet)"


# ---- per trial --------------------------------------------------------------------------------
def problem_keys(trials: pd.DataFrame) -> list[str]:
    """Config keys of the problem solved: all but how it was optimised, K, the seed, t."""
    return ["study", *(k for k in config_keys(trials)
                       if k not in OPTIMISATION_KEYS and k not in SWEEP_KEYS)]  # fmt: skip


def arm_keys(trials: pd.DataFrame) -> list[str]:
    """Config keys of how a problem was optimised, but the learning rate and K."""
    return [k for k in config_keys(trials) if k in OPTIMISATION_KEYS and k != "lr"]


def scope(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that ran their course (finished or diverged), with rows; K ≥ T as ∞ in `K`."""
    if trials.empty or "exclusion" not in trials:
        return trials.iloc[:0].assign(K=pd.Series(dtype=float))
    out = trials[trials["exclusion"].isin(IN_SCOPE) & (trials["n_rows"] > 0)].copy()
    out["K"] = infinite_k(out) if len(out) else pd.Series(dtype=float)
    return out


class Records:
    """Each trial's records and phase rows, split once: a study has thousands of trials."""

    def __init__(self, metrics: pd.DataFrame, phases: pd.DataFrame) -> None:
        self._by = {"metrics": _split(metrics), "phases": _split(phases)}

    def rows(self, source: str, trial: pd.Series | dict) -> pd.DataFrame:
        """The trial's rows of `source` ('metrics' or 'phases') up to its last step, by step."""
        rows = self._by[source].get((trial["study"], trial["trial_id"]))
        if rows is None:
            return pd.DataFrame({"step": []})
        last = _float(trial.get("last_step", math.nan))
        if np.isfinite(last):  # "before divergence": nothing recorded after the last step
            rows = rows[rows["step"].astype(float) <= last]
        return rows


def _split(frame: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    if frame.empty or not {"study", "trial_id", "step"} <= set(frame.columns):
        return {}
    return {key: part.sort_values("step")
            for key, part in frame.groupby(["study", "trial_id"], sort=False)}  # fmt: skip


SOURCES = ("metrics", "phases")


def series(
    records: Records, trial: pd.Series, columns: Sequence[str], sources: Sequence[str] = SOURCES
) -> pd.DataFrame:
    """(step, value) of a trial's first column among `columns` with a finite value: from the
    first of `sources` that holds one; empty when none does."""
    for source in sources:
        rows = records.rows(source, trial)
        for col in columns:
            if col in rows:
                found = _finite(rows, col)
                if len(found):
                    return found
    return pd.DataFrame({"step": [], "value": []})


def gap_series(records: Records, trial: pd.Series) -> pd.DataFrame:
    """(step, lin_gap) at each feature update: the phase rows, else the records' latest value
    where it changes (each record repeats the latest update's gap)."""
    gaps = series(records, trial, (LIN_GAP,), ("phases",))
    if len(gaps):
        return gaps
    gaps = series(records, trial, (LIN_GAP,), ("metrics",))
    changed = gaps["value"].ne(gaps["value"].shift())
    return gaps[changed].reset_index(drop=True)


def _finite(rows: pd.DataFrame, col: str) -> pd.DataFrame:
    values = pd.to_numeric(rows[col], errors="coerce").astype(float)
    keep = np.isfinite(values)
    return pd.DataFrame({"step": rows["step"][keep].astype(float).to_numpy(),
                         "value": values[keep].to_numpy()})  # fmt: skip


def initial_loss(records: Records, trial: pd.Series) -> float:
    """The trial's training loss at step 0 (NaN without a step-0 record)."""
    rows = records.rows("metrics", trial)
    if "train_loss" not in rows or rows.empty:
        return math.nan
    first = rows[rows["step"].astype(float) == 0]
    return float(first["train_loss"].iloc[0]) if len(first) else math.nan


def classify(max_lr_sharpness: float, max_gap: float, initial_loss: float,
             gap_known: bool = False) -> str:  # fmt: skip
    """The class of a diverged trial (module docstring): `max_lr_sharpness` and `max_gap` are
    the largest finite values before divergence (NaN: none recorded); `gap_known` says a trial
    without a recorded gap had none (it made no feature update)."""
    edge = np.isfinite(max_lr_sharpness) and max_lr_sharpness >= EDGE
    big = (np.isfinite(max_gap) and np.isfinite(initial_loss) and initial_loss > 0
           and max_gap >= GAP_FRACTION * initial_loss)  # fmt: skip
    if edge and big:
        return BOTH_CLASS
    if edge:
        return EDGE_CLASS
    if big:
        return GAP_CLASS
    gap_measured = gap_known or (np.isfinite(max_gap) and np.isfinite(initial_loss))
    if np.isfinite(max_lr_sharpness) and gap_measured:
        return NEITHER_CLASS
    return UNMEASURED_CLASS


def trial_stability(
    metrics: pd.DataFrame, trials: pd.DataFrame, phases: pd.DataFrame
) -> pd.DataFrame:
    """One row per trial that finished or diverged: its stability numbers and, when it
    diverged, its class (:func:`classify`)."""
    t = scope(trials)
    problems, arms = problem_keys(t), arm_keys(t)
    shown = _label_keys(t, problems)
    records = Records(metrics, phases)
    rows = []
    for _, trial in t.iterrows():
        ls_all = pd.concat([series(records, trial, (LR_SHARPNESS_MAX, LR_SHARPNESS)),
                            series(records, trial, (LR_SHARPNESS,), ("phases",))])  # fmt: skip
        sharp = pd.concat([series(records, trial, (SHARPNESS,), ("metrics",)),
                           series(records, trial, (SHARPNESS,), ("phases",))])  # fmt: skip
        gaps = gap_series(records, trial)
        initial = initial_loss(records, trial)
        diverged = trial["exclusion"] == "diverged"
        max_ls = float(ls_all["value"].max()) if len(ls_all) else math.nan
        crossed = ls_all.loc[ls_all["value"] >= EDGE, "step"]
        max_gap = float(gaps["value"].max()) if len(gaps) else math.nan
        updates = _float(trial.get("feature_updates", math.nan))
        no_update = updates == 0 or math.isinf(float(trial["K"]))
        row = {
            "study": trial["study"], "trial_id": trial["trial_id"],
            "group": group_label(trial, shown),
            "arm": arm_label(trial, arms),
            "trainer": trial.get("trainer", ""), "optimizer": trial.get("optimizer", ""),
            "k": float(trial["K"]), "lr": _float(trial.get("lr", math.nan)),
            "seed": trial.get("seed", math.nan),
            "diverged": bool(diverged), "last_step": _float(trial.get("last_step", math.nan)),
            "val_acc": _float(trial.get("val_acc", math.nan)),
            "test_acc": _float(trial.get("test_acc", math.nan)),
            "max_lr_sharpness": max_ls,
            "first_edge_step": float(crossed.min()) if len(crossed) else math.nan,
            "max_sharpness": float(sharp["value"].max()) if len(sharp) else math.nan,
            "max_lin_gap": max_gap,
            "max_abs_lin_gap": float(gaps["value"].abs().max()) if len(gaps) else math.nan,
            "initial_train_loss": initial,
            "max_lin_gap_rel": max_gap / initial if initial > 0 else math.nan,
            "feature_updates": updates,
            "class": classify(max_ls, max_gap, initial, no_update) if diverged else "",
        }  # fmt: skip
        row |= {f"__{k}": trial.get(k) for k in (*problems, *arms)}
        rows.append(row)
    return pd.DataFrame(rows)


def _label_keys(trials: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    return [k for k in keys if k in trials and trials[k].nunique(dropna=False) > 1]


def arm_label(trial: pd.Series | dict, arms: Sequence[str] = ()) -> str:
    """'IL sgd', 'IL adam, solved to convergence', 'plain adam', 'gauss_newton' and the like."""
    trainer = str(trial.get("trainer", ""))
    optimizer = str(trial.get("optimizer", ""))
    if trainer == LINEARISED:
        text = f"IL {optimizer}"
        if bool(trial.get("solve_to_convergence", False)):
            text += ", solved to convergence"
    elif trainer == "gauss_newton":
        text = "Gauss-Newton"
    else:
        text = f"{trainer} {optimizer}".strip()
    extra = [k for k in arms if k not in ("trainer", "optimizer", "solve_to_convergence")]
    parts = [f"{k}={format_value(trial.get(k))}" for k in extra
             if trial.get(k) is not None and _varies_from_default(k, trial.get(k))]  # fmt: skip
    return text + (f" ({', '.join(parts)})" if parts else "")


_QUIET = {"momentum": 0.0, "reset_optimizer": False, "schedule": "uniform"}  # the usual values


def _varies_from_default(key: str, value: object) -> bool:
    return key in _QUIET and value != _QUIET[key]


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


# ---- per cell ---------------------------------------------------------------------------------
def stability_table(per_trial: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, group, arm, K, lr): seeds, trained, diverged, the fraction trained,
    mean val and test accuracy of the trained, the largest lr·λ (before divergence for the
    diverged), the divergence steps, the largest |lin_gap| and the classes' counts."""
    cols = ["study", "group", "arm", "trainer", "optimizer", "k", "lr", "seeds", "trained",
            "diverged", "fraction_trained", "val_acc_mean", "test_acc_mean", "max_lr_sharpness",
            "max_lr_sharpness_diverged", "max_sharpness", "divergence_steps",
            "first_divergence_step", "max_abs_lin_gap", "max_lin_gap_rel",
            *CLASS_COLUMNS.values()]  # fmt: skip
    if per_trial.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    keys = ["study", "group", "arm", "trainer", "optimizer", "k", "lr"]
    for values, cell in per_trial.groupby(keys, dropna=False, sort=True):
        lost, done = cell[cell["diverged"]], cell[~cell["diverged"]]
        steps = sorted(lost["last_step"].dropna().astype(int))
        row = dict(zip(keys, values, strict=True)) | {
            "seeds": len(cell), "trained": len(done), "diverged": len(lost),
            "fraction_trained": len(done) / len(cell),
            "val_acc_mean": _mean(done["val_acc"]), "test_acc_mean": _mean(done["test_acc"]),
            "max_lr_sharpness": _max(cell["max_lr_sharpness"]),
            "max_lr_sharpness_diverged": _max(lost["max_lr_sharpness"]),
            "max_sharpness": _max(cell["max_sharpness"]),
            "divergence_steps": ";".join(str(s) for s in steps),
            "first_divergence_step": float(steps[0]) if steps else math.nan,
            "max_abs_lin_gap": _max(cell["max_abs_lin_gap"]),
            "max_lin_gap_rel": _max(cell["max_lin_gap_rel"]),
        }  # fmt: skip
        row |= {col: int((lost["class"] == name).sum()) for name, col in CLASS_COLUMNS.items()}
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _mean(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def _max(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce")
    v = v[np.isfinite(v)]
    return float(v.max()) if len(v) else math.nan


# ---- summary ----------------------------------------------------------------------------------
def summary_lines(per_trial: pd.DataFrame) -> list[str]:
    """Markdown lines for ``summary.md``: the rule, the diverged trials' classes (overall and
    per K and lr), and how many trials crossed the edge and still trained."""
    lines = [f"Rule: {RULE}.\n"]
    if per_trial.empty:
        return [*lines, "No finished or diverged trial to classify.\n"]
    lost = per_trial[per_trial["diverged"]]
    if lost.empty:
        lines.append("No trial diverged.\n")
    else:
        counts = lost["class"].value_counts()
        parts = [f"{int(counts.get(c, 0))} {c}" for c in CLASSES]
        lines.append(f"Diverged trials by mechanism ({len(lost)} in all): {', '.join(parts)}.\n")
        for (group, arm, k, lr), cell in lost.groupby(["group", "arm", "k", "lr"], sort=True):
            where = ", ".join(x for x in (group if group != "all trials" else "", arm) if x)
            c = cell["class"].value_counts()
            text = ", ".join(f"{int(c[n])} {n}" for n in CLASSES if c.get(n, 0))
            lines.append(f"- {where}, K={format_value(float(k))}, lr={format_value(lr)}: "
                         f"{len(cell)} diverged ({text})")  # fmt: skip
        lines.append("")
    done = per_trial[~per_trial["diverged"] & np.isfinite(per_trial["max_lr_sharpness"])]
    if len(done):
        crossed = int((done["max_lr_sharpness"] >= EDGE).sum())
        lines.append(f"Of {len(done)} trials that trained and recorded lr·λ, {crossed} reached "
                     f"lr·λ ≥ {EDGE:g} at some record and still trained (SGD on the network can "
                     "self-stabilise at the edge; a linear model's curvature cannot move within "
                     "its phase).\n")  # fmt: skip
    return lines
