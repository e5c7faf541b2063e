"""What a resume does to the study folder, with the lock held, before Tune restores: the
snapshot chosen by content made the only one Tune sees (also in Ray's driver staging folder),
Tune's view of errored trials corrected, and every finished trial's files verified.

Verifying: every finished trial's metrics file is checked against its last checkpoint.

A finished trial (TERMINATED or DIVERGED in trials.parquet) never runs again, so nothing else
would notice its `results/metrics/<trial_id>.parquet` missing, truncated or overwritten. Its
final checkpoint holds the same rows (`rows.parquet`, written by study.execute.trainable),
so a file that is unreadable or holds other (trial, step) rows is rewritten from there. A file
that is bad and whose checkpoint is gone too cannot be recovered: the resume names it, runs
the rest, and exits 1. The trial's `results/phases/<trial_id>.parquet` is checked against the
same checkpoint's `phases.parquet` and rewritten likewise (checkpoints made before the phases
table hold none: nothing to check).

This reads Tune's on-disk layout of a trial folder (`checkpoint_<index>/`, named in
study.store.tune_files): Tune's public API gives a trial's checkpoints only inside the running trial,
not to the driver before `fit()`.
"""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath
from typing import TextIO

import pyarrow as pa
import pyarrow.fs as pafs

from study.execute.trainable import PHASES_FILE, ROWS_FILE
from study.ray_internals import driver_staging_folders
from study.store.fs import StudyPaths, read_parquet, write_bytes_atomic, write_parquet_atomic
from study.store.layout import FINISHED, Status, metrics_file, phases_file, unique_by_step
from study.store.snapshots import keep_only
from study.store.state import check_resumable, finished_trials, newest_state, trial_statuses
from study.store.tune_files import CHECKPOINT_PREFIX, mark_errored, session_of

__all__ = ["FINISHED", "checkpoint_rows", "prepare_resume", "reconcile_errored", "verify_finished"]


def prepare_resume(paths: StudyPaths, out: TextIO) -> list[str]:
    """With the lock held, before Tune restores: the snapshot chosen by content and made the
    only one Tune sees; Tune's view of errored trials corrected; every finished trial's metrics
    file verified against its checkpoint. Returns the files that could not be recovered."""
    chosen = PurePosixPath(check_resumable(paths)).name  # again, now that the study is ours
    keep_only(paths, chosen)
    prune_driver_staging(paths.name, chosen)
    reconcile_errored(paths)  # Tune's snapshot may miss a trial's ERROR (Ray race)
    rewritten, lost = verify_finished(paths, finished_trials(paths))
    for path in rewritten:
        print(f"rewrote {path} from its trial's last checkpoint", file=out, flush=True)
    return lost


def _read_table(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    try:
        return read_parquet(fs, path)
    except (OSError, pa.ArrowException, ValueError):
        return None


def _steps(t: pa.Table) -> list[tuple[str, int]]:
    return sorted(zip(t.column("trial_id").to_pylist(), t.column("step").to_pylist(), strict=True))


def checkpoint_rows(fs: pafs.FileSystem, trial_dir: str) -> pa.Table | None:
    """The rows of the trial's most complete checkpoint (most steps), unique per step."""
    best = _best_checkpoint(fs, trial_dir)
    return None if best is None else best[0]


def _unique(rows: pa.Table) -> pa.Table:
    """The rows unique per step, in the checkpoint's own layout: a trial checkpointed by an
    older ilstudy keeps its columns, so its file is neither rewritten nor changed on resume."""
    return pa.Table.from_pylist(unique_by_step(rows.to_pylist()), schema=rows.schema)


def _best_checkpoint(fs: pafs.FileSystem, trial_dir: str) -> tuple[pa.Table, str] | None:
    """(metrics rows unique per step, folder) of the checkpoint with the most steps."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_dir))
    except (OSError, pa.ArrowException):
        return None
    best = None
    for info in infos:
        name = PurePosixPath(info.path).name
        if info.type != pafs.FileType.Directory or not name.startswith(CHECKPOINT_PREFIX):
            continue
        rows = _read_table(fs, str(PurePosixPath(info.path, ROWS_FILE)))
        if rows is None or "step" not in rows.column_names:
            continue
        rows = _unique(rows)
        if best is None or rows.num_rows > best[0].num_rows:
            best = (rows, info.path)
    return best


def _checkpoint_phases(fs: pafs.FileSystem, folder: str) -> pa.Table | None:
    """The phase rows a checkpoint folder holds, unique per step (None: it holds none)."""
    phases = _read_table(fs, str(PurePosixPath(folder, PHASES_FILE)))
    if phases is None or "step" not in phases.column_names:
        return None
    return _unique(phases)


def _same_rows(stored: pa.Table | None, saved: pa.Table) -> bool:
    return (
        stored is not None
        and stored.schema.names == saved.schema.names
        and _steps(stored) == _steps(saved)
    )


def verify_finished(
    paths: StudyPaths, finished: dict[str, str | None]
) -> tuple[list[str], list[str]]:
    """Check the metrics files of `finished` (trial_id → its folder name in the study).

    Returns (rewritten, lost): files rewritten from their checkpoints, and files that are
    missing or unreadable with no checkpoint left to rebuild them from. An unreadable lost
    file is renamed to a hidden `.<name>.damaged` beside it, so that readers of the metrics
    folder (which skip dotfiles) still work; the caller reports the lost ones (exit 1).
    """
    fs = paths.storage.fs
    rewritten: list[str] = []
    lost: list[str] = []
    for trial_id, logdir in sorted(finished.items()):
        path = metrics_file(paths.results, trial_id)
        stored = _read_table(fs, path)
        best = (
            _best_checkpoint(fs, str(PurePosixPath(paths.experiment, logdir))) if logdir else None
        )
        saved = None if best is None else best[0]
        if best is not None:
            phases = _checkpoint_phases(fs, best[1])
            phases_path = phases_file(paths.results, trial_id)
            if phases is not None and not _same_rows(_read_table(fs, phases_path), phases):
                write_parquet_atomic(fs, phases_path, phases)
                rewritten.append(paths.display(phases_path))
        if saved is None:
            if stored is None or "step" not in stored.column_names:
                lost.append(paths.display(path))
                if fs.get_file_info(path).type == pafs.FileType.File:
                    name = PurePosixPath(path)
                    fs.move(path, str(name.with_name(f".{name.name}.damaged")))
            continue  # a readable file with no checkpoint to compare: kept as it is
        if not _same_rows(stored, saved):
            write_parquet_atomic(fs, path, saved)
            rewritten.append(paths.display(path))
    return rewritten, lost


# ---- errored trials --------------------------------------------------------------------------
# Make Tune's snapshot agree with `trials.parquet` about errored trials before a resume.
#
# Ray 2.60 can save a stale status for a trial whose worker died: the snapshot a resume read
# once still said RUNNING although the trial had ended in ERROR (a likely path: a trial's JSON
# state is refreshed only when `TuneController._schedule_trial_stop` marks it, which it skips
# when the trial's actor is already gone). A plain `--resume` would then continue an errored
# trial, against the contract (errored trials are retried only with `--retry-errored`). The
# study's own `trials.parquet`, written by the driver from Tune's `on_trial_error`, holds the
# true status; this module carries it back into the snapshot, whatever the cause.


def reconcile_errored(paths: StudyPaths) -> list[str]:
    """Carry ERROR from trials.parquet into Tune's newest snapshot; the trial ids fixed.

    Only unfinished trials change, so a study whose snapshot is right is left untouched.
    The file is replaced atomically.
    """
    errored = {t for t, status in trial_statuses(paths).items() if status == Status.ERROR}
    state_path = newest_state(paths)
    if not errored or state_path is None:
        return []
    fs = paths.storage.fs
    with fs.open_input_stream(state_path) as f:
        state = json.loads(f.readall().decode())
    changed = mark_errored(state, errored)
    if changed:
        write_bytes_atomic(fs, state_path, json.dumps(state).encode())
    return changed


# ---- Ray's driver staging folder ------------------------------------------------------------
def prune_driver_staging(experiment_name: str, chosen: str) -> list[str]:
    """Delete other sessions' files from this Ray session's driver staging folders of the study.

    Tune stages its snapshot and pickles in a local folder of the Ray session (reused when one
    Ray session, e.g. a long-running cluster, runs several drivers of a study), restores its
    searcher from there, and uploads the whole folder at each snapshot: stale files left there
    would come back to storage. The folders are Ray's (study.ray_internals.driver_staging_folders).
    """
    session = session_of(chosen)
    removed = []
    for folder in driver_staging_folders(experiment_name):
        for name in os.listdir(folder):
            other = session_of(name)
            if other is not None and other != session:
                try:
                    os.unlink(os.path.join(folder, name))
                    removed.append(name)
                except OSError:
                    pass
    return removed
