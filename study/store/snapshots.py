"""Which of Tune's experiment snapshots a resume continues from: chosen by content, never by
name, and then the only one Tune can see.

Tune names a snapshot `experiment_state-<session start in local time>.json` (one per driver
run, rewritten in place) and restores the greatest *name*, as it does its searcher and callback
pickles of the same session. A resume from a shell with another TZ, after a DST fall-back or a
clock step back, writes a snapshot whose name sorts *before* the old one, so a later resume
loaded a stale snapshot whose checkpoints were gone (finished trials became ERROR for good).
Here:

- The snapshot a resume continues from is recorded in `<study>/snapshot.json`. Every other
  snapshot present at the next resume was written after it (by the run that continued from
  it), so that one wins, whatever the clocks and time zones say. Among several such (or with no
  record, a study from before this rule) the greatest session start inside the file
  (`stats.start_time`, Unix seconds) wins, then the newest mtime.
- Before Tune restores, every other session's snapshot and pickles are deleted, so Tune's own
  choice by name can only pick the chosen one.

This reads Tune's on-disk file names (`<prefix>-<session>.<ext>`) and one field of its
experiment state, both through study.store.tune_files: Tune offers no public API to choose the
snapshot a restore uses.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from study.store.fs import StudyPaths, experiment_files, write_json_atomic
from study.store.tune_files import STATE_PREFIX, session_of, snapshot_start_time

MARK_FILE = "snapshot.json"  # {"restored_from": "<experiment_state-....json>"}
__all__ = ["choose", "keep_only", "restored_from", "session_of"]


def _state_names(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(STATE_PREFIX) and n.endswith(".json")]


def _mark_path(paths: StudyPaths) -> str:
    return str(PurePosixPath(paths.experiment, MARK_FILE))


def restored_from(paths: StudyPaths) -> str | None:
    fs = paths.storage.fs
    try:
        with fs.open_input_stream(_mark_path(paths)) as f:
            value = json.loads(f.readall().decode()).get("restored_from")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _start_time(paths: StudyPaths, name: str) -> float | None:
    fs = paths.storage.fs
    try:
        with fs.open_input_stream(str(PurePosixPath(paths.experiment, name))) as f:
            state = json.loads(f.readall().decode())
    except (OSError, ValueError):
        return None
    return snapshot_start_time(state)


def _mtime(paths: StudyPaths, name: str) -> float:
    info = paths.storage.fs.get_file_info(str(PurePosixPath(paths.experiment, name)))
    return info.mtime.timestamp() if info.mtime is not None else 0.0


def choose(paths: StudyPaths, names: list[str] | None = None) -> str | None:
    """The name of the snapshot a resume should continue from, or None if there is none."""
    names = experiment_files(paths) if names is None else names
    states = _state_names(names)
    if not states:
        return None
    previous = restored_from(paths)
    newer = [s for s in states if s != previous] or states
    if len(newer) == 1:
        return newer[0]

    def key(name: str) -> tuple[float, float]:
        start = _start_time(paths, name)
        mtime = _mtime(paths, name)
        return (start if start is not None else mtime, mtime)

    return max(newer, key=key)


def keep_only(paths: StudyPaths, chosen: str) -> list[str]:
    """Delete every other session's files from the study folder; record the choice.

    Returns the names deleted. Call with the study lock held, before Tune restores.
    """
    session = session_of(chosen)
    fs = paths.storage.fs
    removed = []
    for name in experiment_files(paths):
        other = session_of(name)
        if other is not None and other != session:
            fs.delete_file(str(PurePosixPath(paths.experiment, name)))
            removed.append(name)
    write_json_atomic(fs, _mark_path(paths), {"restored_from": chosen})
    return removed
