"""Read ``<study>/results/`` into two tables: metrics rows and one row per trial.

The study service writes ``results/metrics/`` (a Parquet dataset, one file per trial or
Hive-partitioned, written temp-file-then-rename) and ``results/trials.parquet``. A study that
is still running has partial data: trials without a ``trials.parquet`` row yet, and trials
with fewer steps. Nothing here guesses: each trial gets a status and, when it cannot enter a
fit or a final-metrics table, the reason (``exclusion``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._errors import ReportError
from ._groups import with_gaps
from ._paths import find_results
from ._schema import (
    DIVERGED,
    DONE,
    ERROR,
    PAUSED,
    PENDING,
    REQUIRED_METRICS_COLUMNS,
    RUNNING,
    STOPPED,
    config_keys,
)

StudyPaths = str | Path | Sequence[str | Path]


@dataclass(frozen=True)
class StudyData:
    """What one or several study folders hold, read once."""

    metrics: pd.DataFrame  # one row per (study, trial, step)
    trials: pd.DataFrame  # one row per (study, trial), with status and exclusion reason
    dirs: tuple[Path, ...]


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
    metrics_df = _concat(metrics)
    trials_df = _concat(trials)
    metric_like = sorted({c for m in metrics for c in m.attrs.get("metric_like", ())})
    metrics_df.attrs["metric_like"] = metric_like
    trials_df.attrs["metric_like"] = metric_like
    return StudyData(metrics_df, trials_df, tuple(dirs))


def _as_paths(study_dirs: StudyPaths) -> list[Path]:
    if isinstance(study_dirs, str | Path):
        return [Path(study_dirs)]
    return [Path(p) for p in study_dirs]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


# ---- one study folder -----------------------------------------------------------------------
def _read_one(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    results, files, trials_file = find_results(path)
    metrics = _read_metrics(results / "metrics", files, default_study=path.name)
    reported = _read_parquet(trials_file) if trials_file.is_file() else None
    if reported is not None:
        if "trial_id" not in reported.columns:
            raise ReportError(f"{trials_file}: not an ilstudy trials table (no trial_id column)")
        reported = _tidy_ids(reported, path.name)
    return metrics, _trial_table(metrics, reported)


def _read_parquet(file: Path) -> pd.DataFrame:
    try:
        return pq.read_table(file).to_pandas()
    except (OSError, pa.ArrowException, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"{file}: not a readable Parquet file ({reason})") from None


def _read_metrics(metrics_dir: Path, files: list[Path], default_study: str) -> pd.DataFrame:
    frames = []
    for file in files:
        frame = _read_parquet(file)
        for part in file.relative_to(metrics_dir).parts[:-1]:  # Hive partitions: key=value
            key, sep, value = part.partition("=")
            if sep and key not in frame.columns:
                frame[key] = value
        frames.append(frame)
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame(columns=["study", "trial_id", "step"])
    metrics = pd.concat(frames, ignore_index=True, sort=False)
    missing = [c for c in REQUIRED_METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise ReportError(
            f"{metrics_dir}: not an ilstudy metrics dataset (missing columns: {', '.join(missing)})"
        )
    metrics = _tidy_ids(metrics, default_study)
    metrics["step"] = pd.to_numeric(metrics["step"], errors="coerce")
    metrics = metrics.dropna(subset=["step"]).astype({"step": "int64"})
    if "diverged" in metrics.columns:
        metrics["diverged"] = metrics["diverged"].fillna(False).astype(bool)
    # rows are unique per (trial, step) by contract; after a resume keep the newest file's row
    metrics = metrics.drop_duplicates(["study", "trial_id", "step"], keep="last")
    metrics = metrics.sort_values(["study", "trial_id", "step"], ignore_index=True)
    metrics.attrs["metric_like"] = _metric_like(metrics)
    return metrics


def _tidy_ids(frame: pd.DataFrame, default_study: str) -> pd.DataFrame:
    """Ids as strings, `study` filled in, `k` as float64 with inf for ∞."""
    frame = frame.copy()
    if "study" not in frame.columns:
        frame["study"] = default_study
    frame["study"] = frame["study"].fillna(default_study).astype(str)
    frame["trial_id"] = frame["trial_id"].astype(str)
    if "k" in frame.columns:
        frame["k"] = pd.to_numeric(frame["k"].replace({"inf": math.inf, "∞": math.inf}))
        frame["k"] = frame["k"].astype("float64")
    return frame


def _metric_like(metrics: pd.DataFrame) -> list[str]:
    """Unknown columns that change within a trial: metrics, whatever their name."""
    unknown = config_keys(metrics.columns)
    if not unknown or metrics.empty:
        return []
    counts = metrics.groupby(["study", "trial_id"])[unknown].nunique(dropna=False).max()
    return sorted(c for c in unknown if counts[c] > 1)


# ---- one row per trial --------------------------------------------------------------------
def _trial_table(metrics: pd.DataFrame, reported: pd.DataFrame | None) -> pd.DataFrame:
    """Final metrics per trial from the rows, joined to what ``trials.parquet`` reports.

    For trials with rows, config and final metrics come from the rows (the authority);
    trials without rows yet (pending, errored at start) keep what ``trials.parquet`` says.
    """
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
    states = [_status(row) for row in table.to_dict("records")]
    table["status"] = [s for s, _ in states]
    table["exclusion"] = [e for _, e in states]
    table = table.sort_values(keys, ignore_index=True)
    table = _mark_duplicates(table, metrics.attrs.get("metric_like", []))
    table = with_gaps(table)
    table["usable"] = table["exclusion"] == ""
    table.attrs["metric_like"] = metrics.attrs.get("metric_like", [])
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
    return last.reset_index()


def _status(row: dict) -> tuple[str, str]:
    """(status, exclusion): the trial's state and why it is left out ('' when usable)."""
    reported = row.get("status")
    reported = str(reported).upper() if isinstance(reported, str) and reported else None
    losses = [row.get(c) for c in ("train_loss", "test_loss")]
    blew_up = any(isinstance(v, float | np.floating) and np.isinf(v) for v in losses)
    if reported == DIVERGED or bool(row.get("diverged") or False) or blew_up:
        return DIVERGED, "diverged"
    if reported == ERROR:
        return ERROR, "errored"
    if reported == STOPPED:  # an early-stopping scheduler's loser: part of tuning, not data
        return STOPPED, "stopped by the scheduler"
    if reported == PENDING or row["n_rows"] == 0:
        return (reported or PENDING), "pending"
    if reported in (RUNNING, PAUSED):
        return reported, "in progress"
    # the trainer records step T last; T - 1 tolerates a writer that counts steps from 0
    last, total = _number(row.get("last_step")), _number(row.get("total_steps"))
    complete = math.isnan(total) or last >= total - 1
    if reported is None:
        return (DONE, "") if complete else (RUNNING, "in progress")
    if reported != DONE:
        return reported, f"status {reported}"
    if not complete:
        return DONE, f"stopped early at step {last:g} of {total:g}"
    return DONE, ""


DUPLICATE = "duplicate"
# Which copy of a duplicated trial is kept: the most finished one, then the first id.
_KEEP_ORDER = {"": 0, "diverged": 1, "in progress": 2}


def _mark_duplicates(table: pd.DataFrame, metric_like: list[str]) -> pd.DataFrame:
    """Exclude every copy of a trial but one: equal config columns (seed included) are one trial.

    Config columns hold the effective config (K >= T as ∞, K = 1 for trainers that ignore K);
    older files may not, so the comparison applies both rules itself. Copies are counted
    once everywhere (means, bands, fits, correlations), never as extra seeds.
    """
    table["duplicate_of"] = ""
    keys = config_keys(table.columns, metric_like)
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
    signature = effective.astype(str).agg("\x1f".join, axis=1)
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
