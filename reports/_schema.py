"""Column roles, read from the files: which columns are ids, config, metrics or provenance.

The study service's files describe themselves: every Parquet field carries its role in its
field metadata (``{b"role": b"config"}``) and every file the results layout's version in its
schema metadata. The reader takes roles from there and keeps them with each frame it returns
(``frame.attrs["roles"]``: column → role); it keeps no list of the layout's columns. The
service's ``study.results`` is the one definition; ``tests/test_contracts.py`` holds the two
to each other.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping

import pandas as pd
import pyarrow as pa

from ._errors import ReportError

ROLE_KEY = b"role"  # field metadata: the column's role
VALUES_KEY = b"values"  # field metadata of the status field: its allowed values
LAYOUT_KEY = b"ilstudy.layout"  # schema metadata: the layout's version
# layout versions this reader understands; 2 adds the phases table (read by the stability
# figures) and the outcome rule, which this reader also applies to layout 1 on read (_load)
READABLE_LAYOUTS = ("1", "2")
ROLES = "roles"  # the frames' attrs key of column → role

# The roles a file may state (the service's study.results.Role).
ID, CONFIG, METRIC, MEASURE, PROVENANCE, STATUS, TIMING = (
    "id", "config", "metric", "measure", "provenance", "status", "timing"
)  # fmt: skip
KNOWN_ROLES = (ID, CONFIG, METRIC, MEASURE, PROVENANCE, STATUS, TIMING)


class Status(enum.StrEnum):
    """A trial's status as trials.parquet states it (the service's study.results.Status)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"
    DIVERGED = "DIVERGED"
    STOPPED = "STOPPED"
    ERROR = "ERROR"


REQUIRED_METRICS_COLUMNS = ("study", "trial_id", "step", "feature_updates", "test_acc", "k",
                            "total_steps")  # fmt: skip
# Config keys swept along one curve: K, the seed, and t of the one-shot schedule (whose N is t).
SWEEP_KEYS = ("k", "seed", "one_shot_at")
SCHEDULE_KEYS = ("schedule", "growth", "one_shot_at")


def file_roles(schema: pa.Schema, file: object) -> dict[str, str] | None:
    """column → role as a file's schema states them; None for a file that states none (one
    written before the layout described itself, or rewritten by a tool that drops Arrow field
    metadata). ReportError for a layout newer than this reader, or an unknown role."""
    version = (schema.metadata or {}).get(LAYOUT_KEY)
    if version is not None and version.decode() not in READABLE_LAYOUTS:
        raise ReportError(
            f"{file}: results layout {version.decode()} is newer than this reader "
            f"(reads {', '.join(READABLE_LAYOUTS)}); update ilstudy"
        )
    roles = {f.name: (f.metadata or {}).get(ROLE_KEY, b"").decode() for f in schema}
    if version is None and not any(roles.values()):
        return None
    unknown = sorted({r for r in roles.values() if r and r not in KNOWN_ROLES})
    if unknown:
        raise ReportError(f"{file}: unknown column role {unknown[0]!r}")
    _check_statuses(schema, file)
    return {name: role for name, role in roles.items() if role}


def _check_statuses(schema: pa.Schema, file: object) -> None:
    if "status" not in schema.names:
        return
    values = (schema.field("status").metadata or {}).get(VALUES_KEY)
    declared = set(values.decode().split(",")) if values else set()
    unknown = sorted(declared - set(Status))
    if unknown:
        raise ReportError(f"{file}: unknown trial status {unknown[0]!r} in the layout")


class _Roles(dict):
    """column → role, never changed in place (`with_roles` makes a new one).

    pandas deep-copies a frame's `attrs` on nearly every operation that returns a frame; this
    mapping is immutable by convention, so its copy is itself and the reports pay nothing
    per operation for carrying it."""

    def __deepcopy__(self, memo: dict) -> _Roles:
        return self

    def __copy__(self) -> _Roles:
        return self


def roles_of(frame: pd.DataFrame) -> Mapping[str, str]:
    """column → role of a frame the reader returned (empty for a frame built by hand)."""
    return frame.attrs.get(ROLES, {})


def with_roles(frame: pd.DataFrame, roles: Mapping[str, str]) -> pd.DataFrame:
    """`frame`, its roles set to `roles` (plus those it already had)."""
    frame.attrs[ROLES] = _Roles({**roles_of(frame), **roles})
    return frame


def config_keys(frame: pd.DataFrame) -> list[str]:
    """The config keys among the frame's columns, in column order: the columns whose role is
    config (never ids, metrics, provenance, timings or status; a column no file describes is
    not config either)."""
    roles = roles_of(frame)
    return [c for c in frame.columns if roles.get(c) == CONFIG]


def group_keys(trials: pd.DataFrame, drop: Iterable[str] = SWEEP_KEYS) -> list[str]:
    """Keys that define a group: `study` plus every config key except those in `drop`."""
    return ["study", *(k for k in config_keys(trials) if k not in set(drop))]


def varying(frame: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    """The keys among `keys` that take more than one value in `frame` (NaN counts as a value)."""
    return [k for k in keys if k in frame.columns and frame[k].nunique(dropna=False) > 1]


def format_value(value: object) -> str:
    """A short, readable rendering of one config value (inf as ∞, floats in %g)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:g}"
    return str(value)


def k_label(k: float) -> str:
    """'K=∞' or 'K=25'."""
    return f"K={format_value(float(k))}"


def group_label(row: pd.Series | dict, keys: Iterable[str]) -> str:
    """'key=value, key=value' over `keys`; 'all trials' when there are none."""
    parts = [f"{'K' if key == 'k' else key}={format_value(row[key])}" for key in keys]
    return ", ".join(parts) if parts else "all trials"
