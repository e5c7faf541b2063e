"""Read-only checks of a study's state: may a new study take this name, may this one resume
(its Tune snapshot and pickles parse), and which trials the results say finished."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import socket
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from study.errors import StudyError
from study.store.checksum import MISMATCH, checksum_state
from study.store.fs import StudyPaths, _first_line, experiment_files, read_parquet
from study.store.layout import FINISHED
from study.store.lock import (
    LOCK_FILE,
    LockHeld,
    describe,
    is_live,
    lock_path,
    only_a_stale_lock,
    read_holder,
)
from study.store.snapshots import choose
from study.store.tune_files import (
    RESUME_PICKLES,
    STATE_PATTERN,
    STATE_PREFIX,
    TUNER_FILE,
    session_of,
    snapshot_problem,
)


def _refuse_if_running_here(paths: StudyPaths) -> None:
    """A live driver of this host holds the study: say so first, rather than whatever its
    half-written files would make the other checks say. (The lock itself is the guarantee.)"""
    path = lock_path(paths.experiment)
    holder = read_holder(path, paths.storage.fs)
    mine = holder is not None and holder.get("pid") == os.getpid()
    if holder and holder.get("host") == socket.gethostname() and not mine and is_live(holder):
        raise LockHeld(
            f"study is locked by {describe(holder)} ({paths.display(path)}); wait for it to "
            "end or stop it"
        )


def check_fresh(paths: StudyPaths) -> None:
    """A new study may not reuse a name: refuse before touching anything."""
    if paths.exists():
        _refuse_if_running_here(paths)
    if paths.exists() and not only_a_stale_lock(paths.storage.fs, paths.experiment):
        raise StudyError(
            f"study {paths.name!r} already exists at {paths.display(paths.experiment)}; "
            "pass --resume to continue it, or choose another --name"
        )


def newest_state(paths: StudyPaths) -> str | None:
    """The experiment snapshot a resume continues from (chosen by content: study.store.snapshots)."""
    chosen = choose(paths)
    return str(PurePosixPath(paths.experiment, chosen)) if chosen else None


def read_trials(paths: StudyPaths, columns: list[str]) -> dict[str, list[Any]]:
    """Columns of the study's trials.parquet (empty if it is not written yet); StudyError
    naming the file when it is damaged (truncated, garbage, empty, wrong columns, values
    that contradict its checksum)."""
    fs = paths.storage.fs
    if fs.get_file_info(paths.trials).type == pafs.FileType.NotFound:
        return {c: [] for c in columns}
    try:
        trials = read_parquet(fs, paths.trials)
        if checksum_state(trials) == MISMATCH:
            raise ValueError("its values differ from the checksum written with them")
        return trials.select(columns).to_pydict()
    except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
        raise StudyError(
            f"cannot resume: {paths.display(paths.trials)} is unreadable ({_first_line(exc)}); "
            "move it away and resume again: the driver rewrites it from Ray Tune's state"
        ) from None


def trial_statuses(paths: StudyPaths) -> dict[str, str]:
    """trial_id → status from the study's trials.parquet (empty if it is not written yet)."""
    columns = read_trials(paths, ["trial_id", "status"])
    return dict(zip(columns["trial_id"], columns["status"], strict=True))


def finished_trials(paths: StudyPaths) -> dict[str, str | None]:
    """trial_id → Tune's folder of the trial, for trials that finished (TERMINATED, DIVERGED).

    A STOPPED trial is left out: its file may hold rows reported after its last checkpoint.
    """
    columns = read_trials(paths, ["trial_id", "status", "logdir"])
    rows = zip(columns["trial_id"], columns["status"], columns["logdir"], strict=True)
    return {t: logdir for t, status, logdir in rows if status in FINISHED}


def check_resumable(paths: StudyPaths) -> str:
    """The newest Tune snapshot, after checking it parses; StudyError naming the bad file.

    Tune silently starts an experiment over when its newest snapshot is empty or unreadable
    (a hard kill can leave an empty one); a resume must never do that.
    """
    fs = paths.storage.fs
    if not paths.exists():
        raise StudyError(
            f"no study {paths.name!r} at {paths.display(paths.experiment)}: "
            "nothing to resume (check --name and --storage)"
        )
    _refuse_if_running_here(paths)
    if only_a_stale_lock(paths.storage.fs, paths.experiment):
        raise StudyError(
            f"study {paths.name!r} never started (its driver was killed while Ray started; "
            f"only its stale lock is in {paths.display(paths.experiment)}): start it again "
            "without --resume"
        )
    for required in (paths.spec, str(PurePosixPath(paths.experiment, TUNER_FILE))):
        info = fs.get_file_info(required)
        if info.type != pafs.FileType.File or not info.size:
            raise StudyError(
                f"cannot resume: {paths.display(required)} is missing or empty; "
                f"the study cannot be resumed (delete {paths.display(paths.experiment)} to start over)"
            )
    names = experiment_files(paths)
    states = [n for n in names if STATE_PATTERN.match(n)]
    if not states:
        missing = PurePosixPath(paths.experiment, f"{STATE_PREFIX}<timestamp>.json")
        raise StudyError(
            f"cannot resume: the experiment state {paths.display(str(missing))} is missing "
            "(the study was stopped before Ray Tune saved it); "
            f"delete {paths.display(paths.experiment)} to start over"
        )
    chosen = choose(paths, names)  # by content, not by Tune's newest name (study.store.snapshots)
    newest = str(PurePosixPath(paths.experiment, chosen))
    try:
        problem = snapshot_problem(_read(fs, newest))
        if problem:
            raise ValueError(problem)
    except (OSError, ValueError) as exc:
        raise _unreadable(paths, "the experiment state " + paths.display(newest), exc) from None
    _check_pickle(paths, str(PurePosixPath(paths.experiment, TUNER_FILE)))
    session = session_of(chosen)
    for pattern in RESUME_PICKLES:
        # The chosen session's own file when there is one: the others are deleted before Tune
        # restores (study.store.snapshots.keep_only).
        matching = [n for n in names if pattern.match(n)]
        own = [n for n in matching if session_of(n) == session]
        if own or matching:
            _check_pickle(paths, str(PurePosixPath(paths.experiment, (own or matching)[-1])))
    return newest


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.readall()


def _check_pickle(paths: StudyPaths, path: str) -> None:
    try:
        raw = _read(paths.storage.fs, path)
        if not raw:
            raise ValueError("empty")
        pickle.loads(raw)  # the study's own files: as trusted as Tune's restore needs them
    except Exception as exc:
        raise _unreadable(paths, paths.display(path), exc) from None


def _unreadable(paths: StudyPaths, what: str, exc: BaseException) -> StudyError:
    reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return StudyError(
        f"cannot resume: {what} is unreadable ({reason}); Ray Tune would silently start "
        "over, so nothing was run. Move that file away to resume from an older snapshot, "
        "if one exists"
    )


# ---------------------------------------------------------------- what status shows


def lock_state(paths: StudyPaths) -> dict[str, Any]:
    """Who holds the study's lock, as `python -m study.status` shows it."""
    fs = paths.storage.fs
    path = lock_path(paths.experiment)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return {"state": "none", "holder": None, "text": "not held: no driver runs this study"}
    holder = read_holder(path, fs)
    if holder is None:
        return {
            "state": "unreadable",
            "holder": None,
            "text": f"{paths.display(path)} is empty or unreadable (a driver may be starting)",
        }
    here = holder.get("host") == socket.gethostname()
    if not is_live(holder):
        text = f"stale: left by {describe(holder)}, which no longer runs (the next driver takes it)"
        return {"state": "stale", "holder": holder, "text": text}
    if here:
        return {"state": "held", "holder": holder, "text": f"held by {describe(holder)}"}
    text = f"held by {describe(holder)}: another host, so it cannot be checked from here"
    return {"state": "held_elsewhere", "holder": holder, "text": text}


def last_write(paths: StudyPaths) -> dict[str, Any] | None:
    """The newest file of the study (its lock aside: it is written once, when a driver starts)."""
    fs = paths.storage.fs
    infos = fs.get_file_info(pafs.FileSelector(paths.experiment, recursive=True))
    newest = None
    for info in infos:
        if info.type != pafs.FileType.File or info.mtime is None:
            continue
        if PurePosixPath(info.path).name == LOCK_FILE:
            continue
        if newest is None or info.mtime > newest.mtime:
            newest = info
    if newest is None:
        return None
    at = newest.mtime.astimezone(dt.UTC) if newest.mtime.tzinfo else newest.mtime
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at
    ago = (dt.datetime.now(tz=dt.UTC) - at).total_seconds()
    return {
        "at": at.isoformat(timespec="seconds"),
        "seconds_ago": round(max(ago, 0.0), 1),
        "file": paths.display(newest.path),
    }
