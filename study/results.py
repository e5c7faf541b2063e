"""The results layout (DESIGN.md, contract): Parquet schemas, rows, and the per-trial file.

`<storage>/<study>/results/metrics/<trial_id>.parquet`: one row per (trial, step), written
whole and atomically by the trial itself from the rows kept in its checkpoint, so the file
always matches a state the trial can continue from. `results/trials.parquet`: one row per
trial, written by the driver (`study.writer.TrialsWriter`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from study.storage import write_parquet_atomic
from trainables import RECORD_KEYS, TrialConfig

TIMESTAMP = pa.timestamp("us", tz="UTC")
_INT_METRICS = {"step", "feature_updates"}
_BOOL_METRICS = {"diverged"}


def _config_type(field: dataclasses.Field) -> pa.DataType:
    if field.name == "k":
        return pa.float64()  # inf for ∞ (contract)
    kind = type(field.default)
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}.get(kind, pa.string())


CONFIG_FIELDS = [pa.field(f.name, _config_type(f)) for f in dataclasses.fields(TrialConfig)]


def _metric_type(key: str) -> pa.DataType:
    if key in _INT_METRICS:
        return pa.int64()
    return pa.bool_() if key in _BOOL_METRICS else pa.float64()


METRIC_FIELDS = [pa.field(key, _metric_type(key)) for key in RECORD_KEYS]
# Written with every row: where, when and with what code the row was made.
PROVENANCE_FIELDS = [
    pa.field("attempt", pa.int64()),  # 0 on the first run; +1 per restore from a checkpoint
    pa.field("reported_at", TIMESTAMP),  # wall clock of the trial's process at the report
    pa.field("device", pa.string()),
    pa.field("node", pa.string()),
    pa.field("ilstudy_version", pa.string()),
    pa.field("torch_version", pa.string()),
]
METRICS_SCHEMA = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        *CONFIG_FIELDS,
        *METRIC_FIELDS,
        *PROVENANCE_FIELDS,
    ]
)
METRIC_NAMES = tuple(f.name for f in METRIC_FIELDS)
CONFIG_NAMES = tuple(f.name for f in CONFIG_FIELDS)

STATUSES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "DIVERGED", "ERROR")
TRIALS_SCHEMA = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("status", pa.string()),  # one of STATUSES
        *CONFIG_FIELDS,
        *METRIC_FIELDS,  # the trial's last record (final metrics once it has finished)
        pa.field("started_at", TIMESTAMP),  # first start of the trial, kept across restores
        pa.field("finished_at", TIMESTAMP),  # null until TERMINATED, DIVERGED or ERROR
        pa.field("wall_s", pa.float64()),  # seconds the trial ran, summed over attempts
        pa.field("error", pa.string()),  # first line of the error, for ERROR trials
        pa.field("logdir", pa.string()),  # Ray Tune's folder of this trial, in the study folder
        pa.field("device", pa.string()),
        pa.field("node", pa.string()),
        pa.field("ilstudy_version", pa.string()),
        pa.field("torch_version", pa.string()),
        pa.field("ray_version", pa.string()),
        pa.field("python_version", pa.string()),
    ]
)


def config_columns(config: Mapping[str, Any] | TrialConfig) -> dict[str, Any]:
    """Every config key as a column value; k as float64 with inf for ∞."""
    cfg = TrialConfig.from_mapping(config)
    values = cfg.to_dict()
    values["k"] = cfg.k_float
    return values


def metric_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """Every known metric of a record; NaN (or null) where the record lacks it."""
    out: dict[str, Any] = {}
    for f in METRIC_FIELDS:
        value = record.get(f.name)
        if value is None and pa.types.is_floating(f.type):
            value = math.nan
        out[f.name] = value
    return out


def utc(seconds: float | None) -> dt.datetime | None:
    """Unix seconds → an aware UTC datetime (what TIMESTAMP columns hold)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows → a table with exactly `schema` (missing columns become null)."""
    columns = {f.name: [row.get(f.name) for row in rows] for f in schema}
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)


def unique_by_step(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per step, the latest one winning, in step order."""
    by_step = {int(row["step"]): dict(row) for row in rows}
    return [by_step[step] for step in sorted(by_step)]


def metrics_file(results_dir: str, trial_id: str) -> str:
    return str(PurePosixPath(results_dir, "metrics", f"{trial_id}.parquet"))


def write_trial_metrics(
    fs: pafs.FileSystem, results_dir: str, trial_id: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Replace the trial's metrics file with exactly `rows` (unique per step), atomically."""
    write_parquet_atomic(
        fs, metrics_file(results_dir, trial_id), table(unique_by_step(rows), METRICS_SCHEMA)
    )
