"""Make Tune's snapshot agree with `trials.parquet` about errored trials before a resume.

Ray 2.60 can save a stale status for a trial whose worker died: the snapshot a resume read
once still said RUNNING although the trial had ended in ERROR (a likely path: a trial's JSON
state is refreshed only when `TuneController._schedule_trial_stop` marks it, which it skips
when the trial's actor is already gone). A plain `--resume` would then continue an errored
trial, against the contract (errored trials are retried only with `--retry-errored`). The
study's own `trials.parquet`, written by the driver from Tune's `on_trial_error`, holds the
true status; this module carries it back into the snapshot, whatever the cause.
"""

from __future__ import annotations

import json

from study.ray_internals import mark_errored
from study.results import Status
from study.storage import StudyPaths, newest_state, trial_statuses, write_bytes_atomic

__all__ = ["mark_errored", "reconcile_errored"]


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
