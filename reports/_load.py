"""Read ``<study>/results/`` into two tables: metrics rows and one row per trial.

The study service writes ``results/metrics/<trial_id>.parquet`` (one file per trial, written
temp-file-then-rename) and ``results/trials.parquet``. Each file states its columns' roles
(``reports._schema``); the frames returned carry them in ``attrs["roles"]``. A study that is
still running has partial data: trials without a ``trials.parquet`` row yet, and trials with
fewer steps. Nothing here guesses: each trial gets a status and, when it cannot enter a fit
or a final-metrics table, the reason (``exclusion``).

Files without roles: a column takes its role from any file of the study that states one (a
file rewritten by a tool that drops Arrow field metadata, such as a pandas round trip, keeps
working beside the others); a column no file describes has no role, so it is never config or
a metric. A study none of whose files states roles (written before the layout described
itself) is refused with that reason.

Outcomes as they happened (the same rule for studies written before the trainer applied it):
a trial whose final training loss is above its initial one (its step-0 record) did not train,
so it is DIVERGED, never TERMINATED, whatever status its files state; ``divergence`` says why
a trial counts as diverged ("flagged" by the trainer or its status, "non-finite loss", or
"final train loss above initial"). ``peak_loss_ratio`` (the largest training loss over the
records divided by the initial one; inf once a loss was non-finite) is a column of every trial:
newer results carry it, and for older ones it is computed here from the same records, so a
reader can find spikes that recovered (a finished trial with a ratio above 1).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ._errors import ReportError
from ._groups import with_gaps
from ._paths import Place, StudyDir, as_study_dir, find_results, read_table
from ._schema import (
    METRIC,
    REQUIRED_METRICS_COLUMNS,
    STATUS,
    Status,
    config_keys,
    file_roles,
    roles_of,
    with_roles,
)

# Columns the reader adds to the trial table, and their roles.
DERIVED_ROLES = {"n_rows": STATUS, "last_step": STATUS, "exclusion": STATUS, "usable": STATUS,
                 "duplicate_of": STATUS, "divergence": STATUS, "acc_gap": METRIC,
                 "loss_gap": METRIC, "initial_train_loss": METRIC,
                 "peak_loss_ratio": METRIC}  # fmt: skip
PEAK = "peak_loss_ratio"
ABOVE_INITIAL = "final train loss above initial"  # the outcome rule's reason (module docstring)
OUTCOME_RULE = (
    "a trial whose final training loss is above its initial (step-0) training loss did not "
    "train: it counts as diverged, never as finished, whatever status its files state "
    "(results written before the trainer applied this rule are labelled the same way on read). "
    "`peak_loss_ratio` in the trial table is the largest training loss over the records divided "
    "by the initial one: a finished trial with a ratio above 1 had a spike it recovered from"
)

# A study is a local folder or a pyarrow filesystem URI (s3://bucket/studies/NAME?endpoint_override=…)
StudyPaths = str | Path | Sequence[str | Path]


@dataclass(frozen=True)
class StudyData:
    """What one or several study folders hold, read once."""

    metrics: pd.DataFrame  # one row per (study, trial, step)
    trials: pd.DataFrame  # one row per (study, trial), with status and exclusion reason
    dirs: tuple[StudyDir, ...]  # Path for a local folder, the URI string otherwise


STOPPED_REASON = "stopped by the scheduler"  # the exclusion of a scheduler's STOPPED trial


def load(study_dirs: StudyPaths) -> pd.DataFrame:
    """The metrics rows of one or several studies: one row per (study, trial_id, step)."""
    return read_studies(study_dirs).metrics


def load_trials(study_dirs: StudyPaths) -> pd.DataFrame:
    """One row per trial: config, status, final metrics, ``usable`` and ``exclusion``.

    Final metrics are each metric's last non-missing value; ``feature_updates`` is then N.
    ``usable`` trials finished normally; the others say why not in ``exclusion``
    ("diverged", "errored", "in progress", "pending", "stopped by the scheduler",
    "stopped early at step s of T", "duplicate"). A duplicate has every config column equal
    to another trial's of the same study, seed included; ``duplicate_of`` names the kept one.
    """
    return read_studies(study_dirs).trials


def read_studies(study_dirs: StudyPaths) -> StudyData:
    """Read and combine studies; `study` tells them apart (relabelled when two names clash)."""
    dirs = _as_paths(study_dirs)
    if not dirs:
        raise ReportError("no study folder given")
    metrics, trials, seen = [], [], set()
    for path in dirs:
        m, t = _read_one(path)
        names = set(m["study"]) | set(t["study"])
        if names & seen:  # same study name in two folders: tell them apart by folder
            rename = {name: f"{name} ({path})" for name in names}
            m["study"], t["study"] = m["study"].map(rename), t["study"].map(rename)
            names = set(rename.values())
        seen |= names
        metrics.append(m)
        trials.append(t)
    roles = {c: r for frame in [*metrics, *trials] for c, r in roles_of(frame).items()}
    metrics_df = with_roles(_concat(metrics), roles)
    trials_df = with_roles(_concat(trials), roles)
    return StudyData(metrics_df, trials_df, tuple(dirs))


def _as_paths(study_dirs: StudyPaths) -> list[StudyDir]:
    if isinstance(study_dirs, str | Path):
        return [as_study_dir(study_dirs)]
    return [as_study_dir(p) for p in study_dirs]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


# ---- one study folder -----------------------------------------------------------------------
def _read_one(path: StudyDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    results, files, trials_file = find_results(path)
    roles: dict[str, str] = {}
    metrics = _read_metrics(results / "metrics", files, roles)
    described = bool(roles)
    reported = None
    if trials_file.is_file():
        reported, reported_roles = _read_parquet(trials_file)
        if "trial_id" not in reported.columns or "study" not in reported.columns:
            raise ReportError(
                f"{trials_file}: not an ilstudy trials table (no trial_id or study column)"
            )
        described |= reported_roles is not None
        roles = {**(reported_roles or {}), **roles}
        reported = _tidy_ids(reported)
    if not described:
        raise ReportError(
            f"{results}: its files state no column roles (no 'ilstudy.layout' metadata): "
            "written before the results layout described itself; rerun the study to report on it"
        )
    metrics = with_roles(metrics, roles)
    return metrics, _trial_table(metrics, reported, roles)


def _read_parquet(file: Place) -> tuple[pd.DataFrame, dict[str, str] | None]:
    """(frame, column → role as the file states it, or None when it states none)."""
    table = read_table(file)
    return table.to_pandas(), file_roles(table.schema, file)


def _read_metrics(metrics_dir: Place, files: list[Place], roles: dict[str, str]) -> pd.DataFrame:
    """The metrics rows of `files`; the roles the files state are added to `roles`."""
    tables = []
    for file in files:
        table = read_table(file)
        for column, role in (file_roles(table.schema, file) or {}).items():
            roles.setdefault(column, role)
        if table.num_columns:
            tables.append(table)
    if not tables:
        return pd.DataFrame(columns=["study", "trial_id", "step"])
    metrics = _joined_frame(tables)
    missing = [c for c in REQUIRED_METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise ReportError(
            f"{metrics_dir}: not an ilstudy metrics dataset (missing columns: {', '.join(missing)})"
        )
    metrics = _tidy_ids(metrics)
    metrics = metrics.astype({"step": "int64"})
    if "diverged" in metrics.columns:
        metrics["diverged"] = metrics["diverged"].fillna(False).astype(bool)
    # rows are unique per (trial, step) by contract; after a resume keep the newest file's row
    metrics = metrics.drop_duplicates(["study", "trial_id", "step"], keep="last")
    return metrics.sort_values(["study", "trial_id", "step"], ignore_index=True)


def _joined_frame(tables: list[pa.Table]) -> pd.DataFrame:
    """The rows of `tables` as one frame, as ``pd.concat`` of their frames would give them.

    Arrow joins the tables first (columns a file lacks become nulls), so that pandas converts
    once rather than once per trial file. A file that carries pandas' own metadata, or columns
    whose types Arrow cannot unify, takes pandas' path, which honours both.
    """
    if not any(b"pandas" in (t.schema.metadata or {}) for t in tables):
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True, sort=False)


def _tidy_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Ids as strings (pandas may read an all-null column as another type)."""
    frame = frame.copy()
    frame["study"] = frame["study"].astype(str)
    frame["trial_id"] = frame["trial_id"].astype(str)
    return frame


# ---- one row per trial --------------------------------------------------------------------
def _trial_table(
    metrics: pd.DataFrame, reported: pd.DataFrame | None, roles: dict[str, str] | None = None
) -> pd.DataFrame:
    """Final metrics per trial from the rows, joined to what ``trials.parquet`` reports.

    For trials with rows, config and final metrics come from the rows (the authority);
    trials without rows yet (pending, errored at start) keep what ``trials.parquet`` says.
    """
    roles = dict(roles_of(metrics)) if roles is None else roles
    keys = ["study", "trial_id"]
    table = _finals(metrics)
    if reported is not None:
        reported = reported.drop_duplicates(keys, keep="last")
        extra = [c for c in reported.columns if c in keys or c not in table.columns]
        table = table.merge(reported[extra], on=keys, how="left")
        has_rows = pd.MultiIndex.from_frame(reported[keys]).isin(
            pd.MultiIndex.from_frame(table[keys])
        )
        if not has_rows.all():
            table = _concat([table, reported.loc[~has_rows]])
    table["n_rows"] = table["n_rows"].fillna(0).astype("int64")
    records = table.to_dict("records")  # the stated status, before the rules below label it
    states = [_status(row) for row in records]
    table["status"] = [str(s) for s, _ in states]
    table["exclusion"] = [e for _, e in states]
    table["divergence"] = [divergence_reason(r) if e == "diverged" else ""
                           for r, (_, e) in zip(records, states, strict=True)]  # fmt: skip
    table = with_roles(table.sort_values(keys, ignore_index=True), {**roles, **DERIVED_ROLES})
    table = _mark_duplicates(table)
    table = with_gaps(table)
    table["usable"] = table["exclusion"] == ""
    return table


def _finals(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per trial: config, last step, number of rows, and each column's last non-missing value.

    Config is constant within a trial, so its last non-missing value is the value.
    """
    if metrics.empty:
        return pd.DataFrame(columns=["study", "trial_id", "n_rows", "last_step"])
    grouped = metrics.groupby(["study", "trial_id"], sort=True)
    last = grouped.last()  # rows are sorted by step
    last["n_rows"] = grouped.size()
    last["last_step"] = grouped["step"].max()
    if "diverged" in metrics.columns:
        last["diverged"] = grouped["diverged"].any()
    if "train_loss" in metrics.columns:
        first = metrics[metrics["step"] == 0].groupby(["study", "trial_id"])["train_loss"].first()
        last["initial_train_loss"] = first.astype(float).reindex(last.index)
        last[PEAK] = _peak_ratio(metrics, grouped, last)
    return last.reset_index()


def _peak_ratio(metrics: pd.DataFrame, grouped, last: pd.DataFrame) -> pd.Series:
    """The trainer's ``peak_loss_ratio`` where recorded, else computed from the records: the
    largest training loss over them (inf once one was non-finite) over the step-0 one."""
    loss = metrics["train_loss"].astype(float)
    worst = loss.where(np.isfinite(loss) | loss.isna(), math.inf)  # NaN loss is non-finite too
    worst = worst.where(~(metrics.get("diverged", False) & loss.isna()), math.inf)
    peak = worst.groupby([metrics["study"], metrics["trial_id"]]).max()
    with np.errstate(divide="ignore", invalid="ignore"):
        computed = peak.reindex(last.index) / last["initial_train_loss"]
    if PEAK in metrics.columns:
        stored = grouped[PEAK].max().astype(float)
        return stored.where(stored.notna(), computed)
    return computed


def _status(row: dict) -> tuple[str, str]:
    """(status, exclusion): the trial's state and why it is left out ('' when usable).

    The status is the one trials.parquet states. A trial it does not list yet (a study that
    is running) gets RUNNING, or TERMINATED once its rows reach total_steps (the trainer
    records step T last). Either way, rows that say the trial diverged make it DIVERGED, and
    a TERMINATED trial whose rows stop short of T is left out with that reason.
    """
    reported = row.get("status")
    reported = str(reported).upper() if isinstance(reported, str) and reported else None
    if _divergence(row):
        return Status.DIVERGED, "diverged"
    if reported == Status.ERROR:
        return Status.ERROR, "errored"
    if reported == Status.STOPPED:  # an early-stopping scheduler's loser: tuning, not data
        return Status.STOPPED, STOPPED_REASON
    if reported == Status.PENDING or row["n_rows"] == 0:
        return (reported or Status.PENDING), "pending"
    if reported == Status.RUNNING:
        return reported, "in progress"
    last, total = _number(row.get("last_step")), _number(row.get("total_steps"))
    complete = math.isnan(total) or last >= total
    if complete and reported in (None, Status.TERMINATED) and _above_initial(row):
        return Status.DIVERGED, "diverged"  # it finished worse than it started: not trained
    if reported is None:
        return (Status.TERMINATED, "") if complete else (Status.RUNNING, "in progress")
    if reported != Status.TERMINATED:
        return reported, f"status {reported}"
    if not complete:
        return reported, f"stopped early at step {last:g} of {total:g}"
    return reported, ""


def _divergence(row: dict) -> str:
    """Why the trainer's records or status say the trial diverged ('' when they do not)."""
    reported = row.get("status")
    if (isinstance(reported, str) and reported.upper() == Status.DIVERGED) or bool(
        row.get("diverged") or False
    ):
        return "flagged"
    losses = [row.get(c) for c in ("train_loss", "test_loss")]
    if any(isinstance(v, float | np.floating) and np.isinf(v) for v in losses):
        return "non-finite loss"
    return ""


def _above_initial(row: dict) -> bool:
    """The outcome rule: the final training loss is above the step-0 one."""
    final, initial = _number(row.get("train_loss")), _number(row.get("initial_train_loss"))
    return bool(np.isfinite(final) and np.isfinite(initial) and final > initial)


def divergence_reason(row: dict) -> str:
    """Why a diverged trial counts as diverged: flagged, non-finite loss, or the outcome rule."""
    return _divergence(row) or (ABOVE_INITIAL if _above_initial(row) else "")


DUPLICATE = "duplicate"
# Which copy of a duplicated trial is kept: the most finished one, then the first id.
_KEEP_ORDER = {"": 0, "diverged": 1, "in progress": 2}


def _mark_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """Exclude every copy of a trial but one: equal config columns (seed included) are one trial.

    Config columns hold the effective config (K >= T as ∞, K = 1 for trainers that ignore K);
    older files may not, so the comparison applies both rules itself. Copies are counted
    once everywhere (means, bands, fits, correlations), never as extra seeds.
    """
    table["duplicate_of"] = ""
    keys = config_keys(table)
    if table.empty or not keys:
        return table
    effective = table[keys].copy()
    if "k" in effective and "total_steps" in effective:
        k = pd.to_numeric(effective["k"], errors="coerce")
        total = pd.to_numeric(effective["total_steps"], errors="coerce")
        k = k.where(~(k >= total), math.inf)
        if "trainer" in effective:
            k = k.where(effective["trainer"].isin(["linearised", None]) | k.isna(), 1.0)
        effective["k"] = k
    # a key absent from older files is null there; str() keeps null apart from every value
    text = [effective[c].astype(object).map(str).tolist() for c in effective.columns]
    signature = pd.Series(["\x1f".join(row) for row in zip(*text, strict=True)], index=table.index)
    rank = table["exclusion"].map(_KEEP_ORDER).fillna(len(_KEEP_ORDER))
    order = pd.DataFrame({"study": table["study"], "sig": signature, "rank": rank,
                          "id": table["trial_id"]}).sort_values(["study", "sig", "rank", "id"])  # fmt: skip
    first = order.groupby(["study", "sig"], sort=False)["id"].transform("first")
    copies = order.index[order["id"] != first]
    table.loc[copies, "duplicate_of"] = first.loc[copies]
    table.loc[copies, "exclusion"] = DUPLICATE
    return table


def _number(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return out
