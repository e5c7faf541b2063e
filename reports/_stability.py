"""Issue 21's stability data: lr·λ_max against the edge 2, the loss jump at feature updates,
and which of the two preceded each divergence.

Gradient descent on a quadratic of curvature λ is stable only while lr·λ < 2, and a linear
model's curvature is fixed at its linearisation point θ_s (the README, "Stability measures"). The trials
record, as measures (NaN when not measured):

- ``sharpness``: the top eigenvalue λ_max of the Gauss-Newton matrix on a training probe;
- ``lr_sharpness``: lr·λ_max (÷ (1 + momentum) with momentum, so the edge is always 2); NaN
  for Adam and Gauss-Newton, whose steps are preconditioned;
- ``lr_sharpness_max``: the largest lr_sharpness since the previous record;
- ``lin_gap``: the network's loss minus the linear model's loss at the latest feature update;

and a per-phase dataset, ``results/phases/<trial_id>.parquet`` (one row per measured feature
update, the initial point included: step, feature_updates, sharpness, lr_sharpness, lin_gap,
loss_before, loss_after). Older studies have neither; their figures are skipped with a reason.

**Onset.** A record is *healthy* while its training loss is finite and at most the trial's
training loss at step 0. A diverged trial's divergence began after its *last healthy record*
that is followed only by unhealthy ones (a spike that recovered is not the onset). The
linearisation point read for it is the latest phase row before the first unhealthy record
whose linear model was still healthy just before the update (``loss_before`` at most the
initial loss; the initial point always counts): that phase is the one that diverged, its
curvature fixed when it began. When feature updates came between that point and the onset
unmeasured (the stability measures follow a cadence), the phase that diverged began at one of
them, and the trial is *not measured* (a measured update whose linear model had already
passed the bar shows the divergence began before it, so it leaves nothing unmeasured). Measures taken after the blow-up are consequences and are not
read. Without phase rows, the last healthy record's latest ``lr_sharpness`` and ``lin_gap`` are
read instead (an update between that record and the onset is then missed).

**Classification of a diverged trial** (:func:`classify`), from that point alone:

- *edge* crossed: its lr·λ_max is ≥ 2;
- *big gap*: the loss jump at it (``lin_gap``, network minus linear model) is ≥ GAP_FRACTION ×
  the trial's training loss at step 0 (the jump alone takes the network as far up as the
  untrained network was; a negative gap, the network better than its linear model,
  destabilises nothing);
- the class is ``both``, ``lr·λ ≥ 2 before divergence`` or ``feature-update gap`` accordingly;
  ``neither`` when lr·λ was measured below 2 and the gap was measured (or the point is the
  initial one, so no feature update came before the divergence) below the bar; otherwise
  ``not measured`` (no lr·λ for Adam or Gauss-Newton, or no gap recorded), never a guess.

For cross-entropy the curvature at a phase's start need not last through the phase (it falls as
the logits grow), so lr·λ ≥ 2 at a phase start does not by itself make a phase diverge; the
summary therefore also counts the trials that trained although lr·λ reached 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._errors import ReportError
from ._groups import LINEARISED, OPTIMISATION_KEYS, infinite_k
from ._paths import StudyDir, as_study_dir, metric_files, read_table, results_dir, study_name
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
    "each diverged trial is read at the linearisation point where its divergence began: the "
    "latest one before its first record whose training loss is above the step-0 loss "
    "(after its last healthy record), whose linear model was still healthy just before the "
    f"update. It is *{EDGE_CLASS}* when lr·λ_max there is ≥ {EDGE:g}; *{GAP_CLASS}* when the "
    f"loss jump there (`lin_gap`, network minus linear model) is ≥ {GAP_FRACTION:g} × the "
    f"step-0 training loss; *{BOTH_CLASS}* when both hold; *{NEITHER_CLASS}* when lr·λ was "
    f"measured below {EDGE:g} and the jump below the bar (the initial point has no jump); "
    f"*{UNMEASURED_CLASS}* otherwise (Adam and Gauss-Newton have no lr·λ; a jump not recorded "
    "is not assumed small; a feature update after the point read and before the onset that "
    "was not measured means the phase that diverged began unmeasured)"
)


# ---- reading ----------------------------------------------------------------------------------
def read_phases(dirs: Sequence[StudyDir], trials: pd.DataFrame) -> pd.DataFrame:
    """The per-phase rows of every study in `dirs` (empty when none has a phases folder).

    A study is a local folder or a pyarrow filesystem URI, as ``read_studies`` takes it.
    Study names are relabelled as ``read_studies`` relabels them when two folders share one.
    A file that is not readable Parquet, or states an unknown role, is a ReportError.
    """
    names = set(trials["study"]) if "study" in trials else set()
    frames, roles = [], {}
    for path in (as_study_dir(d) for d in dirs):
        for file in metric_files(results_dir(path) / "phases"):
            table = read_table(file)
            roles |= file_roles(table.schema, file) or {}
            frame = table.to_pandas()
            if not {"trial_id", "step"} <= set(frame.columns):
                raise ReportError(f"{file}: not an ilstudy phases table (no trial_id or step)")
            if "study" not in frame:
                frame["study"] = study_name(path)
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


Columns = dict[str, np.ndarray]  # a trial's columns as float arrays, by step
# The columns a stability reading uses, kept as float arrays per trial: each trial is read
# many times, and a study has thousands of trials.
READ_COLUMNS = ("step", "feature_updates", "train_loss", "loss_before", *STABILITY_COLUMNS)
_NONE: Columns = {"step": np.array([], dtype=float)}


class Records:
    """Each trial's records and phase rows, split once: a study has thousands of trials."""

    def __init__(self, metrics: pd.DataFrame, phases: pd.DataFrame) -> None:
        self._by = {"metrics": _split(metrics), "phases": _split(phases)}
        self._cut: dict[tuple, Columns] = {}  # every measure read from a trial cuts it once

    def columns(self, source: str, trial: pd.Series | dict) -> Columns:
        """The trial's columns of `source` ('metrics' or 'phases') up to its last step, by
        step, as float arrays (a value that is not a number is NaN). Callers never change them."""
        last = _float(trial.get("last_step", math.nan))
        key = (source, trial["study"], trial["trial_id"], last if np.isfinite(last) else None)
        cut = self._cut.get(key)
        if cut is None:
            cut = self._by[source].get((trial["study"], trial["trial_id"]), _NONE)
            if np.isfinite(last):  # "before divergence": nothing recorded after the last step
                cut = _where(cut, cut["step"] <= last)
            self._cut[key] = cut
        return cut


def _split(frame: pd.DataFrame) -> dict[tuple, Columns]:
    if frame.empty or not {"study", "trial_id", "step"} <= set(frame.columns):
        return {}
    frame = frame.dropna(subset=["study", "trial_id"])
    frame = frame.sort_values(["study", "trial_id", "step"], kind="stable")
    values = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
              for c in READ_COLUMNS if c in frame.columns}  # fmt: skip
    keys = list(zip(frame["study"], frame["trial_id"], strict=True))
    out, start = {}, 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out[keys[start]] = {c: v[start:i] for c, v in values.items()}
            start = i
    return out


def _where(columns: Columns, keep: np.ndarray) -> Columns:
    return {c: v[keep] for c, v in columns.items()}


def _last(columns: Columns, col: str) -> float:
    """`col`'s value in the last row (NaN without rows or without the column)."""
    values = columns.get(col)
    return float(values[-1]) if values is not None and len(values) else math.nan


SOURCES = ("metrics", "phases")
Steps = tuple[np.ndarray, np.ndarray]  # (step, value)


def series(
    records: Records, trial: pd.Series, columns: Sequence[str], sources: Sequence[str] = SOURCES
) -> pd.DataFrame:
    """(step, value) of a trial's first column among `columns` with a finite value: from the
    first of `sources` that holds one; empty when none does."""
    return _frame(_series(records, trial, columns, sources))


def _series(records: Records, trial: pd.Series, columns: Sequence[str],
            sources: Sequence[str] = SOURCES) -> Steps:  # fmt: skip
    for source in sources:
        found = records.columns(source, trial)
        for col in columns:
            if col in found:
                steps, values = _finite(found, col)
                if len(steps):
                    return steps, values
    return _NONE["step"], _NONE["step"]


def gap_series(records: Records, trial: pd.Series) -> pd.DataFrame:
    """(step, lin_gap) at each feature update: the phase rows, else the records' latest value
    where it changes (each record repeats the latest update's gap)."""
    return _frame(_gap_series(records, trial))


def _gap_series(records: Records, trial: pd.Series) -> Steps:
    steps, values = _series(records, trial, (LIN_GAP,), ("phases",))
    if len(steps):
        return steps, values
    steps, values = _series(records, trial, (LIN_GAP,), ("metrics",))
    changed = np.ones(len(values), dtype=bool)
    changed[1:] = values[1:] != values[:-1]
    return steps[changed], values[changed]


def _finite(columns: Columns, col: str) -> Steps:
    values = columns[col]
    keep = np.isfinite(values)
    return columns["step"][keep], values[keep]


def _frame(found: Steps) -> pd.DataFrame:
    return pd.DataFrame({"step": found[0], "value": found[1]})


def initial_loss(records: Records, trial: pd.Series) -> float:
    """The trial's training loss at step 0 (NaN without a step-0 record)."""
    rows = records.columns("metrics", trial)
    if "train_loss" not in rows:
        return math.nan
    first = rows["train_loss"][rows["step"] == 0]
    return float(first[0]) if len(first) else math.nan


def classify(lr_sharpness: float, gap: float, initial_loss: float,
             gap_known: bool = False, unmeasured_updates: int = 0) -> str:  # fmt: skip
    """The class of a diverged trial (module docstring), from lr·λ_max and the loss jump at the
    linearisation point where its divergence began (NaN: not recorded); `gap_known` says that
    point had no jump to record (the initial point: no feature update came before it);
    `unmeasured_updates` counts feature updates after that point and before the onset that
    were not measured: the phase that diverged then began unmeasured, and nothing is claimed."""
    if unmeasured_updates > 0:
        return UNMEASURED_CLASS
    edge = np.isfinite(lr_sharpness) and lr_sharpness >= EDGE
    big = (np.isfinite(gap) and np.isfinite(initial_loss) and initial_loss > 0
           and gap >= GAP_FRACTION * initial_loss)  # fmt: skip
    if edge and big:
        return BOTH_CLASS
    if edge:
        return EDGE_CLASS
    if big:
        return GAP_CLASS
    gap_measured = gap_known or (np.isfinite(gap) and np.isfinite(initial_loss))
    if np.isfinite(lr_sharpness) and gap_measured:
        return NEITHER_CLASS
    return UNMEASURED_CLASS


@dataclass(frozen=True)
class Onset:
    """Where a diverged trial's divergence began, and the linearisation point read for it."""

    last_healthy: float  # step of the last healthy record before the final excursion
    first_bad: float  # step of the first record of that excursion
    step: float  # the linearisation point read (NaN: none)
    lr_sharpness: float  # its lr·λ_max
    lin_gap: float  # the jump at it (NaN at the initial point)
    no_gap: bool  # it is the initial point: no feature update came before the divergence
    source: str  # "phases" or "records"
    unmeasured: int = 0  # feature updates after that point and before the onset, not measured


def onset(records: Records, trial: pd.Series, initial: float) -> Onset:
    """The onset of a trial's divergence (module docstring); for a trial that did not diverge,
    its last record is the last healthy one."""
    rows = records.columns("metrics", trial)
    steps = rows["step"]
    last_healthy = first_bad = float(steps[-1]) if len(steps) else math.nan
    if trial.get("exclusion") == "diverged" and np.isfinite(initial) and "train_loss" in rows:
        loss = rows["train_loss"]
        good = np.flatnonzero(np.isfinite(loss) & (loss <= initial))
        if len(good):
            i = good[-1]
            last_healthy = float(steps[i])
            first_bad = float(steps[min(i + 1, len(steps) - 1)])
        else:
            last_healthy, first_bad = math.nan, float(steps[0])
    points = healthy_points(records, trial, initial, last_healthy, first_bad)
    if len(points["step"]):
        step = float(points["step"][-1])
        index = _last(points, "feature_updates")
        # a record counts the updates made before its step; a phase row is the j-th update
        made = _last(_where(rows, steps == first_bad), "feature_updates")
        later = records.columns("phases", trial)
        later = _where(later, (later["step"] > step) & (later["step"] < first_bad))
        if len(later["step"]):  # measured, its linear model already past the bar: began before
            made = (
                float(later["feature_updates"][0]) - 1 if "feature_updates" in later else math.nan
            )
        missed = int(made - index) if np.isfinite(made) and np.isfinite(index) else 0
        return Onset(last_healthy, first_bad, step, _last(points, LR_SHARPNESS),
                     _last(points, LIN_GAP) if step > 0 else math.nan, step == 0, "phases",
                     max(missed, 0))  # fmt: skip
    before = _where(rows, steps <= last_healthy)
    ls_steps, ls = _series(records, trial, (LR_SHARPNESS,), ("metrics",))
    gap_steps, gaps = _series(records, trial, (LIN_GAP,), ("metrics",))
    ls, gaps = ls[ls_steps <= last_healthy], gaps[gap_steps <= last_healthy]
    updates = _last(before, "feature_updates")
    no_gap = updates == 0 or math.isinf(_float(trial.get("K", math.nan)))
    return Onset(last_healthy, first_bad, _last(before, "step"),
                 float(ls[-1]) if len(ls) else math.nan,
                 float(gaps[-1]) if len(gaps) else math.nan, no_gap, "records")  # fmt: skip


def healthy_points(records: Records, trial: pd.Series, initial: float, last_healthy: float,
                   first_bad: float) -> Columns:  # fmt: skip
    """The trial's phase rows at linearisation points set before its divergence began: before
    the first unhealthy record (an update at its step comes after the loss it records), with the
    linear model still healthy (its loss before the update at most the initial training loss;
    the initial point always)."""
    rows = records.columns("phases", trial)
    steps = rows["step"]
    keep = (steps < first_bad) | (steps == 0) if np.isfinite(first_bad) else steps == steps
    if "loss_before" in rows and np.isfinite(initial):
        before = rows["loss_before"]
        keep &= (steps == 0) | (np.isfinite(before) & (before <= initial))
    elif np.isfinite(last_healthy):
        keep &= steps <= last_healthy
    return _where(rows, keep)


def trial_stability(
    metrics: pd.DataFrame, trials: pd.DataFrame, phases: pd.DataFrame
) -> pd.DataFrame:
    """One row per trial that finished or diverged: its stability numbers and, when it
    diverged, its onset and class (:func:`classify`). The maxima run over the records and
    linearisation points before the divergence began (over all of them for a trained trial)."""
    t = scope(trials)
    problems, arms = problem_keys(t), arm_keys(t)
    shown = _label_keys(t, problems)
    records = Records(metrics, phases)
    rows = []
    for _, trial in t.iterrows():
        initial = initial_loss(records, trial)
        start = onset(records, trial, initial)
        points = healthy_points(records, trial, initial, start.last_healthy, start.first_bad)
        end = start.last_healthy
        ls_steps, ls = _joined(
            _upto(_series(records, trial, (LR_SHARPNESS_MAX, LR_SHARPNESS), ("metrics",)), end),
            _finite(points, LR_SHARPNESS) if LR_SHARPNESS in points else None,
        )
        _, sharp = _joined(_upto(_series(records, trial, (SHARPNESS,), ("metrics",)), end),
                           _finite(points, SHARPNESS) if SHARPNESS in points else None)  # fmt: skip
        if LIN_GAP in points and np.isfinite(points[LIN_GAP]).any():
            _, gaps = _finite(points, LIN_GAP)
        else:
            _, gaps = _upto(_gap_series(records, trial), end)
        diverged = trial["exclusion"] == "diverged"
        max_ls = float(ls.max()) if len(ls) else math.nan
        crossed = ls_steps[ls >= EDGE]
        max_gap = float(gaps.max()) if len(gaps) else math.nan
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
            "feature_updates": _float(trial.get("feature_updates", math.nan)),
            "initial_train_loss": initial,
            "max_lr_sharpness": max_ls,
            "first_edge_step": float(crossed.min()) if len(crossed) else math.nan,
            "max_sharpness": float(sharp.max()) if len(sharp) else math.nan,
            "max_lin_gap": max_gap,
            "max_abs_lin_gap": float(np.abs(gaps).max()) if len(gaps) else math.nan,
            "max_lin_gap_rel": max_gap / initial if initial > 0 else math.nan,
        }  # fmt: skip
        nan = math.nan
        row |= {
            "last_healthy_step": start.last_healthy if diverged else nan,
            "onset_step": start.step if diverged else nan,
            "onset_lr_sharpness": start.lr_sharpness if diverged else nan,
            "onset_lin_gap": start.lin_gap if diverged else nan,
            "onset_lin_gap_rel": start.lin_gap / initial if diverged and initial > 0 else nan,
            "onset_read_from": start.source if diverged else "",
            "unmeasured_updates": start.unmeasured if diverged else nan,
            "class": classify(start.lr_sharpness, start.lin_gap, initial, start.no_gap,
                              start.unmeasured) if diverged else "",
        }  # fmt: skip
        row |= {f"__{k}": trial.get(k) for k in (*problems, *arms)}
        rows.append(row)
    return pd.DataFrame(rows)


def _upto(found: Steps, step: float) -> Steps:
    """The (step, value) pairs at or before `step` (none when it is NaN: no healthy record)."""
    keep = found[0] <= step if np.isfinite(step) else np.zeros(len(found[0]), dtype=bool)
    return found[0][keep], found[1][keep]


def _joined(first: Steps, second: Steps | None) -> Steps:
    if second is None:
        return first
    return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])


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
    mean val and test accuracy of the trained, the largest lr·λ (before divergence began, for the
    diverged), the diverged trials' lr·λ and loss jump where it began (largest over seeds), the
    divergence steps, the largest |lin_gap| and the classes' counts."""
    cols = ["study", "group", "arm", "trainer", "optimizer", "k", "lr", "seeds", "trained",
            "diverged", "fraction_trained", "val_acc_mean", "test_acc_mean", "max_lr_sharpness",
            "max_lr_sharpness_diverged", "onset_lr_sharpness_max", "onset_lin_gap_rel_max",
            "max_sharpness", "divergence_steps",
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
            "onset_lr_sharpness_max": _max(lost["onset_lr_sharpness"]),
            "onset_lin_gap_rel_max": _max(lost["onset_lin_gap_rel"]),
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
        text = (f"Of {len(done)} trials that trained and recorded lr·λ, {crossed} reached "
                f"lr·λ ≥ {EDGE:g} at some measured point and still trained")  # fmt: skip
        if crossed:
            text += (" (SGD on the network can self-stabilise at the edge; for cross-entropy the "
                     "curvature at a phase's start can fall within the phase): lr·λ ≥ 2 at a "
                     "measured point does not by itself make a trial diverge")  # fmt: skip
        lines.append(text + ".\n")
    return lines
