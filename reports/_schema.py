"""Column roles in the results layout: which columns are ids, metrics, timings or config.

DESIGN.md ("Results layout") fixes the ids and metrics; every other column is config,
except the bookkeeping columns that Ray or the writer may add (timings, versions, hosts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

ID_COLUMNS = ("study", "trial_id")
CORE_METRICS = ("step", "feature_updates", "train_loss", "train_acc", "val_loss", "val_acc",
                "test_loss", "test_acc")  # fmt: skip
EXTRA_METRICS = ("diverged", "elapsed_s", "batch_loss", "cg_iters")
MEASURES = (
    "kernel_distance_init",
    "kernel_distance_prev",
    "kernel_velocity",
    "kernel_alignment",
    "param_change",
    "lin_point_change",
)
DERIVED = ("acc_gap", "loss_gap")  # generalisation gaps the reader adds to each trial
METRICS = (*CORE_METRICS, *EXTRA_METRICS, *MEASURES, *DERIVED)
STATUS_COLUMNS = ("status", "started_at", "finished_at", "wall_s")
# Columns Ray Tune or the results writer add (provenance, hosts, paths), and ours: never config.
# data_dir and download say where data lived, not which data: they must not split groups.
BOOKKEEPING = frozenset(
    {
        "timestamp", "date", "done", "pid", "hostname", "node_ip", "node", "host",
        "training_iteration", "iterations_since_restore", "time_this_iter_s", "time_total_s",
        "time_since_restore", "experiment_id", "trial_name", "logdir", "checkpoint_dir_name",
        "should_checkpoint", "error", "message", "traceback", "reported_at", "written_at",
        "attempt", "attempts", "device", "trial_dir", "data_dir", "download", "trial_wall_s",
        "n_rows", "last_step", "usable", "exclusion", "duplicate_of", "data_sha256",
    }
)  # fmt: skip
BOOKKEEPING_SUFFIXES = ("_version", "_at", "_sha", "_sha256", "_commit")
CONFIG_LOOKALIKES = frozenset({"one_shot_at"})  # config keys with a bookkeeping-like suffix

REQUIRED_METRICS_COLUMNS = ("trial_id", "step", "feature_updates", "test_acc", "k", "total_steps")
# Config keys swept along one curve: K, the seed, and t of the one-shot schedule (whose N is t).
SWEEP_KEYS = ("k", "seed", "one_shot_at")
SCHEDULE_KEYS = ("schedule", "growth", "one_shot_at")

# Statuses, normalised to upper case. DIVERGED also covers rows flagged `diverged`.
DONE, ERROR, DIVERGED, STOPPED = "TERMINATED", "ERROR", "DIVERGED", "STOPPED"
RUNNING, PAUSED, PENDING = "RUNNING", "PAUSED", "PENDING"


def is_bookkeeping(column: str) -> bool:
    """True for columns that are neither config nor a metric (ids, timings, versions, hosts)."""
    if column in CONFIG_LOOKALIKES:
        return False
    return (
        column in ID_COLUMNS
        or column in STATUS_COLUMNS
        or column in BOOKKEEPING
        or column.startswith(("config/", "__"))
        or column.endswith(BOOKKEEPING_SUFFIXES)
    )


def config_keys(columns: Iterable[str], metric_like: Iterable[str] = ()) -> list[str]:
    """The config keys among `columns`: everything that is not an id, metric or bookkeeping."""
    skip = set(METRICS) | set(metric_like)
    return [c for c in columns if c not in skip and not is_bookkeeping(c)]


def group_keys(trials: pd.DataFrame, drop: Iterable[str] = SWEEP_KEYS) -> list[str]:
    """Keys that define a group: `study` plus every config key except those in `drop`."""
    keys = config_keys(trials.columns, trials.attrs.get("metric_like", ()))
    return ["study", *(k for k in keys if k not in set(drop))]


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
