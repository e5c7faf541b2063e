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

from study.execute.retention import repair_named_checkpoints
from study.execute.trainable import PHASES_FILE, ROWS_FILE
from study.ray_internals import driver_staging_folders
from study.store.checksum import MISMATCH, OK, checksum_state, same_content, write_checked
from study.store.fs import StudyPaths, read_parquet, write_bytes_atomic
from study.store.layout import (
    FINISHED,
    METRICS_SCHEMA,
    Status,
    metrics_file,
    phases_file,
    unique_by_step,
)
from study.store.snapshots import keep_only
from study.store.state import (
    check_resumable,
    finished_trials,
    newest_state,
    read_trials,
    trial_statuses,
)
from study.store.tune_files import CHECKPOINT_PREFIX, mark_errored, session_of
from study.store.verify import reported_rows

__all__ = ["FINISHED", "checkpoint_rows", "prepare_resume", "reconcile_errored", "verify_finished"]


def prepare_resume(paths: StudyPaths, out: TextIO) -> list[str]:
    """With the lock held, before Tune restores: the snapshot chosen by content and made the
    only one Tune sees; Tune's view of errored trials corrected; every finished trial's metrics
    file verified against its checkpoint. Returns the files that could not be recovered."""
    chosen = PurePosixPath(check_resumable(paths)).name  # again, now that the study is ours
    keep_only(paths, chosen)
    prune_driver_staging(paths.name, chosen)
    reconcile_errored(paths)  # Tune's snapshot may miss a trial's ERROR (Ray race)
    state_path = str(PurePosixPath(paths.experiment, chosen))
    for trial_id in repair_named_checkpoints(paths, state_path):
        print(
            f"trial {trial_id}: the checkpoint its snapshot names is gone; it continues from "
            "its most advanced complete checkpoint",
            file=out,
            flush=True,
        )
    sources: dict[str, str] = {}
    rewritten, lost = verify_finished(paths, finished_trials(paths), sources)
    for path in rewritten:
        source = sources.get(path, "its trial's last checkpoint")
        print(f"rewrote {path} from {source}", file=out, flush=True)
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


def _kept(stored: pa.Table | None, source: pa.Table | None) -> bool:
    """Whether a stored file stays as it is: readable, not contradicting its checksum, and
    holding every step of `source` (its checksum proves its values) or, for a file written
    before checksums, exactly `source`'s rows and values."""
    if stored is None or "step" not in stored.column_names:
        return False
    state = checksum_state(stored)
    if state == MISMATCH:
        return False
    if source is None:
        return True  # nothing to compare with: kept as it is
    if state == OK:
        return set(_steps(stored)) >= set(_steps(source))
    return same_content(stored, source)


def _most_rows(
    stored: pa.Table | None, saved: pa.Table | None, reported: list[dict]
) -> pa.Table | None:
    """Every step any source holds, each from the most exact one: the checkpoint's rows, then
    a stored file whose checksum matches, then Tune's log of the reports (result.json, which
    lacks only the record's own `reported_at`). None when no source holds a row."""
    by_step = {int(r["step"]): r for r in reported}
    if stored is not None and "step" in stored.column_names and checksum_state(stored) == OK:
        by_step |= {int(r["step"]): r for r in stored.to_pylist()}
    if saved is not None:
        by_step |= {int(r["step"]): r for r in saved.to_pylist()}
    if not by_step:
        return None
    if saved is not None and len(by_step) == saved.num_rows:
        return saved  # the checkpoint alone: in its own layout, as it was written
    layout = saved if saved is not None else stored
    schema = layout.schema if layout is not None else METRICS_SCHEMA
    return pa.Table.from_pylist([by_step[step] for step in sorted(by_step)], schema=schema)


def _set_aside(fs: pafs.FileSystem, path: str) -> None:
    """Rename a damaged file to a hidden `.<name>.damaged`: readers of the folder skip it."""
    if fs.get_file_info(path).type == pafs.FileType.File:
        name = PurePosixPath(path)
        fs.move(path, str(name.with_name(f".{name.name}.damaged")))


def verify_finished(
    paths: StudyPaths, finished: dict[str, str | None], sources: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Check the metrics and phases files of `finished` (trial_id → its folder in the study).

    A file is kept when it is readable, matches its checksum and holds every step its sources
    hold (a file written before checksums: when it equals its checkpoint's rows). Otherwise it
    is rewritten from the sources with the most rows (`_most_rows`: the checkpoints, then
    Tune's result.json), never from fewer than they hold together.

    Returns (rewritten, lost): files rewritten, and files with no source left to rebuild them
    from, or rebuilt short of the trial's last step in trials.parquet. An unreadable or
    altered lost file is renamed to a hidden `.<name>.damaged` beside it, so that readers of
    the metrics folder (which skip dotfiles) still work; the caller reports the lost ones
    (exit 1). `sources`, when given, gets each rewritten file's source, as words.
    """
    fs = paths.storage.fs
    rewritten: list[str] = []
    lost: list[str] = []
    last = read_trials(paths, ["trial_id", "step"])
    last_step = dict(zip(last["trial_id"], last["step"], strict=True))
    for trial_id, logdir in sorted(finished.items()):
        path = metrics_file(paths.results, trial_id)
        trial_dir = str(PurePosixPath(paths.experiment, logdir)) if logdir else None
        best = _best_checkpoint(fs, trial_dir) if trial_dir else None
        if best is not None:
            phases = _checkpoint_phases(fs, best[1])
            phases_path = phases_file(paths.results, trial_id)
            if phases is not None and not _kept(_read_table(fs, phases_path), phases):
                write_checked(fs, phases_path, phases)
                rewritten.append(paths.display(phases_path))
        stored = _read_table(fs, path)
        saved = None if best is None else best[0]
        reported = reported_rows(fs, trial_dir, paths.name, trial_id) if trial_dir else []
        source = _most_rows(stored, saved, reported)
        if _kept(stored, source):
            continue
        shown = paths.display(path)
        if source is None:
            lost.append(shown)
            _set_aside(fs, path)
            continue
        write_checked(fs, path, source)
        rewritten.append(shown)
        if sources is not None:
            from_log = saved is None or source.num_rows > saved.num_rows
            sources[shown] = (
                "its trial's last checkpoint" if not from_log
                else "Tune's result.json" if saved is None
                else "its trial's last checkpoint and Tune's result.json"
            )  # fmt: skip
        step = last_step.get(trial_id)
        if step is not None and max(source.column("step").to_pylist()) < step:
            lost.append(shown)  # rebuilt short of the last step: named, never silent
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
