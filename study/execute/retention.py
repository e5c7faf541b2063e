"""Which trial checkpoints the study deletes, and when: never one a snapshot may name.

Tune's own `CheckpointConfig(num_to_keep=2)` deleted a trial's older checkpoints as soon as a
newer one registered, while the experiment snapshot on storage (written every few seconds,
uploaded in the background) still named one of them; a driver killed then left a snapshot
whose trial could not be restored (ERROR for good, its rows since lost). So Tune keeps every
checkpoint (study.execute.tuner) and this callback deletes, after each checkpoint of a trial
and at the end, the trial's checkpoints that no snapshot can name:

- every checkpoint an experiment snapshot on storage names is kept;
- so is every checkpoint at least as new as the one the live snapshot (this session's)
  names: a snapshot being uploaded names the trial's latest checkpoint at the time it was
  saved, which is never older than that one. At the end Tune's final snapshot is on storage and
  names each trial's latest checkpoint, so this keeps no more; but after an error Tune ends
  without that snapshot, and one may still be on its way;
- the newest two complete checkpoints (both files present) are kept, and any incomplete one
  not older than them (a checkpoint still being written).

On disk that is at most the named checkpoints plus the newest two per trial once the snapshot
has caught up. A snapshot on storage that cannot be read (being replaced) deletes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from ray import tune

from study.ray_internals import (
    forget_checkpoints,
    latest_checkpoint_path,
    point_at_checkpoint,
    trial_storage,
)
from study.store.fs import StudyPaths, read_parquet, write_bytes_atomic
from study.store.tune_files import (
    CHECKPOINT_PREFIX,
    STATE_PATTERN,
    named_checkpoints,
    snapshot_start_time,
)

KEEP = 2  # the newest complete checkpoints kept per trial
COMPLETE = ("state.pt", "rows.parquet")  # study.execute.trainable writes both in each one


@dataclass(frozen=True)
class Folder:
    """One checkpoint folder of a trial: its name, whether both files are there, and when it
    was last written (the newest file's mtime, seconds)."""

    name: str
    complete: bool
    mtime: float


def doomed(
    folders: list[Folder], named: set[str], live: set[str] | None, keep: int = KEEP
) -> list[str]:
    """The folders to delete. `named`: names any snapshot on storage holds for the trial;
    `live`: those of the snapshot still being rewritten (None: nothing in flight any more)."""
    complete = sorted((f for f in folders if f.complete), key=lambda f: f.mtime)
    if not complete:
        return []
    kept = set(named) | {f.name for f in complete[-keep:]}
    floor = complete[-keep:][0].mtime
    kept |= {f.name for f in folders if not f.complete and f.mtime >= floor}
    if live is not None:
        times = [f.mtime for f in folders if f.name in live]
        if not times:
            return []  # the live snapshot names none yet: one on its way may name any
        kept |= {f.name for f in folders if f.mtime >= min(times)}
    return sorted(f.name for f in folders if f.name not in kept)


def checkpoint_folders(fs: pafs.FileSystem, trial_dir: str) -> list[Folder]:
    """The trial's checkpoint folders on storage."""
    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True, recursive=True))
    folders: dict[str, dict[str, Any]] = {}
    base = trial_dir.rstrip("/") + "/"
    for info in infos:
        parts = info.path[len(base) :].split("/") if info.path.startswith(base) else []
        if not parts or not parts[0].startswith(CHECKPOINT_PREFIX):
            continue
        entry = folders.setdefault(parts[0], {"files": set(), "mtime": 0.0})
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        if len(parts) == 1 or info.type == pafs.FileType.File:
            entry["mtime"] = max(entry["mtime"], mtime)
        if len(parts) == 2 and info.type == pafs.FileType.File and info.size:
            entry["files"].add(parts[1])
    return [
        Folder(name, all(f in e["files"] for f in COMPLETE), e["mtime"])
        for name, e in folders.items()
    ]


class CheckpointRetention(tune.Callback):
    """Deletes the checkpoints no snapshot can name (see the module's docstring)."""

    def __init__(self) -> None:
        # path → ((mtime, size), session start, trial folder → names) of each snapshot read
        self._snapshots: dict[str, tuple[tuple[float, int], float, dict[str, set[str]]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # pickled with the Tuner: the cache is rebuilt after a restore

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def _named(self, fs: pafs.FileSystem, experiment: str) -> tuple[set[str], str] | None:
        """(every snapshot on storage's file name, the live one's name) after refreshing the
        cache of their contents; None when one cannot be read."""
        infos = [
            i
            for i in fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
            if i.type == pafs.FileType.File and STATE_PATTERN.match(PurePosixPath(i.path).name)
        ]
        if not infos:
            return None
        for info in infos:
            stamp = (info.mtime.timestamp() if info.mtime else 0.0, info.size or 0)
            cached = self._snapshots.get(info.path)
            if cached is not None and cached[0] == stamp:
                continue
            try:
                with fs.open_input_stream(info.path) as f:
                    state = json.loads(f.readall().decode())
                names = named_checkpoints(state)
            except (OSError, ValueError, KeyError, IndexError, TypeError, pa.ArrowException):
                return None  # being replaced, or damaged: delete nothing this time
            start = snapshot_start_time(state)
            self._snapshots[info.path] = (stamp, stamp[0] if start is None else start, names)
        for path in set(self._snapshots) - {i.path for i in infos}:
            del self._snapshots[path]
        # The live one is this session's: the latest session start inside the file. Not the
        # newest mtime: Tune uploads its whole staging folder at each snapshot, so where one Ray
        # session runs several drivers of a study, the resumed-from snapshot is rewritten too.
        live = max(infos, key=lambda i: (self._snapshots[i.path][1], self._snapshots[i.path][0]))
        return {i.path for i in infos}, live.path

    def prune(self, trial: Any) -> list[str]:
        """Delete the trial's checkpoints that no snapshot can name; returns their names."""
        storage = trial_storage(trial)
        if not storage.trial_dir_name:
            return []
        fs = storage.fs
        try:
            seen = self._named(fs, storage.experiment)
            if seen is None:
                return []
            paths, live_path = seen
            folder = storage.trial_dir_name
            named = set().union(*(self._snapshots[p][2].get(folder, set()) for p in paths))
            live = self._snapshots[live_path][2].get(folder, set())
            gone = doomed(checkpoint_folders(fs, storage.trial), named, live)
            for name in gone:
                fs.delete_dir(f"{storage.trial}/{name}")
        except (OSError, pa.ArrowException):
            return []  # storage trouble: keep everything; the next checkpoint tries again
        return gone

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info):
        # Called before Tune registers this checkpoint: its list keeps the previous one too.
        forget_checkpoints(trial, KEEP - 1)
        self.prune(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # After Tune's final snapshot is on storage (it waits for the upload): the older
        # checkpoints of trials that ended since their last prune, and those an earlier
        # session's snapshot named (deleted when this session resumed).
        for trial in trials:
            self.prune(trial)


# ---- a resume whose snapshot names a checkpoint that is gone ---------------------------------
def _steps_in(fs: pafs.FileSystem, folder: str) -> int | None:
    """Distinct steps in a checkpoint's rows, or None when its rows cannot be read."""
    try:
        steps = read_parquet(fs, f"{folder}/{COMPLETE[1]}", ["step"]).column("step")
    except (OSError, pa.ArrowException, ValueError, KeyError):
        return None
    return len(set(steps.to_pylist()))


def newest_complete(fs: pafs.FileSystem, trial_dir: str) -> tuple[str, int] | None:
    """(name, steps) of the trial's checkpoint with the most steps and both files, or None."""
    best = None
    for folder in checkpoint_folders(fs, trial_dir):
        steps = _steps_in(fs, f"{trial_dir}/{folder.name}") if folder.complete else None
        if steps is not None and (best is None or (steps, folder.mtime) > best[1:]):
            best = (folder.name, steps, folder.mtime)
    return None if best is None else (best[0], best[1])


def repair_named_checkpoints(paths: StudyPaths, state_path: str) -> list[str]:
    """Point every unfinished or errored trial of the snapshot whose checkpoint is gone (or
    incomplete) at its most advanced complete checkpoint, or at none (it starts afresh and
    the trainable still looks for one on storage). Returns the trial ids changed; the file is
    replaced atomically. Rows already stored stay: the trial rewrites its file from the rows
    of the checkpoint it continues from, one per (trial, step)."""
    fs = paths.storage.fs
    with fs.open_input_stream(state_path) as f:
        state = json.loads(f.readall().decode())
    changed = []
    for pair in state.get("trial_data", []):
        trial = json.loads(pair[0])
        folder = trial.get("relative_logdir")
        if trial.get("status") == "TERMINATED" or not isinstance(folder, str):
            continue
        latest = latest_checkpoint_path(pair[1])
        if latest is None:
            continue
        trial_dir = f"{paths.experiment}/{folder}"
        name = PurePosixPath(latest).name
        present = {f.name: f.complete for f in checkpoint_folders(fs, trial_dir)}
        if present.get(name):
            continue
        best = newest_complete(fs, trial_dir)
        pair[1] = point_at_checkpoint(pair[1], *(best or (None, 0)))
        changed.append(trial.get("trial_id"))
    if changed:
        write_bytes_atomic(fs, state_path, json.dumps(state).encode())
    return changed
