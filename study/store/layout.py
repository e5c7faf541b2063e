"""The results layout, defined once: Parquet schemas, rows, statuses, and the per-trial file.

`<storage>/<study>/results/metrics/<trial_id>.parquet`: one row per (trial, step), written
whole and atomically by the trial itself from the rows kept in its checkpoint, so the file
always matches a state the trial can continue from. `results/phases/<trial_id>.parquet`: the
trial's stability measures, one row per measured linearisation point (trainables.PHASE_KEYS),
written the same way beside it. `results/trials.parquet`: one row per trial, written by the
driver (`study.execute.writer.TrialsWriter`).

The files describe themselves: every field carries its `Role` in its Arrow field metadata
(`{b"role": b"config"}`), the status field lists the `Status` values, and the schema metadata
carries the layout's version (`LAYOUT_KEY`). A reader (`reports`) takes roles from the files,
never from a list of its own; this module is the only list.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from study.store.checksum import write_checked
from trainables import MEASURE_KEYS, PHASE_KEYS, RECORD_KEYS, TrialConfig

# +1 whenever a reader of older files would misread the new ones. 2: the phases table, and
# the outcome rule (a trial whose final training loss is above its initial one is diverged).
LAYOUT_VERSION = "2"
LAYOUT_KEY = b"ilstudy.layout"  # schema metadata: the layout's version
TABLE_KEY = b"ilstudy.table"  # schema metadata: "metrics", "phases" or "trials"
ROLE_KEY = b"role"  # field metadata: the column's Role
VALUES_KEY = b"values"  # field metadata of the status field: the Status values, comma-separated


class Role(enum.StrEnum):
    """What a column is; the value stored in its field metadata under ROLE_KEY."""

    ID = "id"  # which study and trial the row belongs to
    CONFIG = "config"  # a trial config key: constant within a trial, defines what is trained
    METRIC = "metric"  # a value of the trial's record, changing with the step
    MEASURE = "measure"  # a feature-learning measure of the record (NaN when not measured)
    PROVENANCE = "provenance"  # where, when and with what code or data the row was made
    STATUS = "status"  # the trial's state, and its error
    TIMING = "timing"  # when the trial started and finished, and how long it ran


class Status(enum.StrEnum):
    """A trial's status in trials.parquet."""

    PENDING = "PENDING"  # not running now; a (resumed) study runs it
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"  # ran to total_steps
    DIVERGED = "DIVERGED"  # ended at a record flagged diverged
    STOPPED = "STOPPED"  # ended early by a Tune scheduler (ASHA) or stop rule; keeps its rows
    ERROR = "ERROR"


FINISHED = (Status.TERMINATED, Status.DIVERGED)  # ran as far as the trial itself would
ENDED = (*FINISHED, Status.STOPPED)  # never runs again, and not for an error

TIMESTAMP = pa.timestamp("us", tz="UTC")
_INT_METRICS = {"step", "feature_updates", "val_examples"}
_BOOL_METRICS = {"diverged"}
# Config keys that say where the data lived or how it was fetched, not what is trained: the
# same trial may run with another data_dir, and data_sha256 pins the bytes of data_path. They
# are provenance, so no reader groups trials by them.
_CONFIG_PROVENANCE = {"data_dir", "download", "data_sha256"}


def _field(name: str, type_: pa.DataType, role: Role, **extra: str) -> pa.Field:
    metadata = {ROLE_KEY: role.value.encode()}
    metadata |= {key.encode(): value.encode() for key, value in extra.items()}
    return pa.field(name, type_, metadata=metadata)


def _config_type(field: dataclasses.Field) -> pa.DataType:
    if field.name == "k":
        return pa.float64()  # inf for ∞ (contract)
    kind = type(field.default)
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}.get(kind, pa.string())


CONFIG_FIELDS = [
    _field(
        f.name, _config_type(f), Role.PROVENANCE if f.name in _CONFIG_PROVENANCE else Role.CONFIG
    )
    for f in dataclasses.fields(TrialConfig)
]


def _metric_type(key: str) -> pa.DataType:
    if key in _INT_METRICS:
        return pa.int64()
    return pa.bool_() if key in _BOOL_METRICS else pa.float64()


METRIC_FIELDS = [
    _field(key, _metric_type(key), Role.MEASURE if key in MEASURE_KEYS else Role.METRIC)
    for key in RECORD_KEYS
]
ID_FIELDS = [_field("study", pa.string(), Role.ID), _field("trial_id", pa.string(), Role.ID)]
# Written with every row: where, when and with what code the row was made.
PROVENANCE_FIELDS = [
    _field("attempt", pa.int64(), Role.PROVENANCE),  # 0 on the first run; +1 per restore
    _field("reported_at", TIMESTAMP, Role.PROVENANCE),  # the trial process's clock at the report
    _field("device", pa.string(), Role.PROVENANCE),
    _field("node", pa.string(), Role.PROVENANCE),
    _field("ilstudy_version", pa.string(), Role.PROVENANCE),
    _field("torch_version", pa.string(), Role.PROVENANCE),
]


def _schema(table_name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={LAYOUT_KEY: LAYOUT_VERSION.encode(), TABLE_KEY: table_name.encode()})  # fmt: skip


METRICS_SCHEMA = _schema(
    "metrics", [*ID_FIELDS, *CONFIG_FIELDS, *METRIC_FIELDS, *PROVENANCE_FIELDS]
)
METRIC_NAMES = tuple(f.name for f in METRIC_FIELDS)
CONFIG_NAMES = tuple(f.name for f in CONFIG_FIELDS)

# The step and update count index the rows (metrics as in the metrics table); the rest measure.
PHASE_FIELDS = [
    _field(key, *((pa.int64(), Role.METRIC) if key in _INT_METRICS else (pa.float64(), Role.MEASURE)))
    for key in PHASE_KEYS
]  # fmt: skip
PHASES_SCHEMA = _schema("phases", [*ID_FIELDS, *CONFIG_FIELDS, *PHASE_FIELDS, *PROVENANCE_FIELDS])

TRIALS_SCHEMA = _schema(
    "trials",
    [
        *ID_FIELDS,
        _field("status", pa.string(), Role.STATUS, values=",".join(Status)),
        *CONFIG_FIELDS,
        *METRIC_FIELDS,  # the trial's last record (final metrics once it has finished)
        _field("started_at", TIMESTAMP, Role.TIMING),  # first start, kept across restores
        _field("finished_at", TIMESTAMP, Role.TIMING),  # null until the trial has ended
        _field("wall_s", pa.float64(), Role.TIMING),  # seconds the trial ran, over all attempts
        _field("error", pa.string(), Role.STATUS),  # first line of the error, for ERROR trials
        _field("logdir", pa.string(), Role.PROVENANCE),  # Tune's folder of the trial
        _field("device", pa.string(), Role.PROVENANCE),
        _field("node", pa.string(), Role.PROVENANCE),
        _field("ilstudy_version", pa.string(), Role.PROVENANCE),
        _field("torch_version", pa.string(), Role.PROVENANCE),
        _field("ray_version", pa.string(), Role.PROVENANCE),
        _field("python_version", pa.string(), Role.PROVENANCE),
    ],
)


def roles(schema: pa.Schema) -> dict[str, str]:
    """column → role, as the schema's field metadata states it."""
    return {f.name: (f.metadata or {}).get(ROLE_KEY, b"").decode() for f in schema}


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


_REPORTED_PROVENANCE = ("attempt", "device", "node", "ilstudy_version", "torch_version")


def reported_row(
    study: str, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]
) -> dict[str, Any]:
    """A metrics row from a result the trial reported to Tune (the driver keeps these; Tune
    logs them in result.json): the record's values, its provenance, the report's time."""
    return {
        "study": study,
        "trial_id": trial_id,
        **config_columns({k: v for k, v in config.items() if k in CONFIG_NAMES}),
        **metric_columns(result),
        **{k: result.get(k) for k in _REPORTED_PROVENANCE},
        "reported_at": utc(result.get("reported_at")),
    }


def phase_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """Every phase key of a stability row; NaN where it lacks a measure."""
    return {f.name: row.get(f.name, math.nan) for f in PHASE_FIELDS}


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


def phases_file(results_dir: str, trial_id: str) -> str:
    return str(PurePosixPath(results_dir, "phases", f"{trial_id}.parquet"))


def write_trial_phases(
    fs: pafs.FileSystem, results_dir: str, trial_id: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Replace the trial's phases file with exactly `rows` (unique per step), atomically."""
    write_checked(
        fs, phases_file(results_dir, trial_id), table(unique_by_step(rows), PHASES_SCHEMA)
    )


def write_trial_metrics(
    fs: pafs.FileSystem, results_dir: str, trial_id: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Replace the trial's metrics file with exactly `rows` (unique per step), atomically,
    with its content checksum (study.store.checksum)."""
    write_checked(
        fs, metrics_file(results_dir, trial_id), table(unique_by_step(rows), METRICS_SCHEMA)
    )
