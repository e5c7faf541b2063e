"""The files Tune writes into a study folder, as the study reads them: snapshot and pickle
names, the experiment state's JSON, checkpoint folders.

Tune offers no API for these; they follow the Ray versions that `study.ray_internals.TESTED_RAY`
bounds (and `pyproject.toml` pins), and that range is checked before the driver touches Ray.
They live in `store` because reading a study's state (`state.check_resumable`, `snapshots`)
must work without Ray. Nothing here imports Ray.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Tune offers no API to inspect or choose the experiment snapshot a restore uses, and it
# silently starts over when that snapshot is damaged; the study checks, chooses and repairs
# snapshots itself (study.store.state.check_resumable, study.store.snapshots, study.execute.resume), so it
# must know their names and contents.
STATE_PREFIX = "experiment_state-"
STATE_PATTERN = re.compile(r"^experiment_state-.*\.json$")  # Tune's experiment snapshot
# Pickles Tune loads on resume (the newest of each); a damaged one makes it start over too.
RESUME_PICKLES = (
    re.compile(r"^searcher-state-.*\.pkl$"),
    re.compile(r"^search_gen_state-.*\.json$"),
    re.compile(r"^basic-variant-state-.*\.json$"),
    re.compile(r"^callback-states-.*\.pkl$"),
)
TUNER_FILE = "tuner.pkl"  # Tune's restore entry point (Tuner.can_restore looks for it)
# Each of the files above is `<prefix>-<session>.<ext>`, the session being the driver run's
# start in local time; study.store.snapshots keeps one session's files only.
SESSION_FILE = re.compile(
    r"^(experiment_state|searcher-state|search_gen_state|basic-variant-state|callback-states)"
    r"-(?P<session>.+)\.(json|pkl)$"
)
# Tune's folder of one trial checkpoint: `<trial folder>/checkpoint_<index>/`. The public API
# hands a trial only the checkpoint the last snapshot recorded, and the driver none before
# `fit()`; a resume verifies finished trials' files against their checkpoints, and a restored
# trial looks for a newer checkpoint than the snapshot's (study.execute.trainable).
CHECKPOINT_PREFIX = "checkpoint_"
# the empty file Tune writes in the experiment folder and checks at every trial checkpoint
STORAGE_MARKER = ".validate_storage_marker"
# Trial statuses as Tune writes them into a snapshot (its `Trial` statuses, not ours).
TUNE_UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def session_of(name: str) -> str | None:
    """The driver session a snapshot or pickle belongs to, from its file name."""
    match = SESSION_FILE.match(name)
    return match.group("session") if match else None


def snapshot_start_time(state: Any) -> float | None:
    """The session start (Unix seconds) recorded inside an experiment state, if any."""
    try:
        return float(state["stats"]["start_time"])
    except (KeyError, TypeError, ValueError):
        return None


def snapshot_problem(raw: bytes) -> str | None:
    """Why an experiment state's bytes cannot be resumed from ("empty", ...), or None if fine.

    Raises ValueError for bytes that are not JSON.
    """
    if not raw.strip():
        return "empty"
    state = json.loads(raw)
    trial_data = state.get("trial_data") if isinstance(state, dict) else None
    if not trial_data or "runner_data" not in state:
        return "no trials in it"
    return None


def mark_errored(state: dict, errored: set[str]) -> list[str]:
    """Set ERROR on unfinished trials of a Tune experiment state that are in `errored`.

    `state["trial_data"]` holds `[trial_json, run_metadata_json]` pairs, each a JSON text.
    Returns the ids changed, in snapshot order.
    """
    changed = []
    for pair in state.get("trial_data", []):
        trial = json.loads(pair[0])
        if trial.get("trial_id") not in errored or trial.get("status") not in TUNE_UNFINISHED:
            continue
        trial["status"] = "ERROR"
        pair[0] = json.dumps(trial, indent=2)
        metadata = json.loads(pair[1])
        if metadata.get("error_filename") is None:  # lets Tune find the trial's error.txt
            metadata["error_filename"] = "error.txt"
        pair[1] = json.dumps(metadata)
        changed.append(trial["trial_id"])
    return changed


# Tune pickles each trial's checkpoint manager (its latest checkpoint and the ones it keeps)
# into the snapshot as hex cloudpickle: `{"_type": "CLOUDPICKLE_FALLBACK", "value": "<hex>"}`.
# The folder names are read from the pickle's bytes (a pickled str is its UTF-8 bytes), never
# by unpickling, which would need Ray and run the pickle's code. Over-matching only keeps more.
PICKLED = "CLOUDPICKLE_FALLBACK"
_CHECKPOINT_NAME = re.compile(rb"checkpoint_\d+")


def _pickled_blobs(value: Any) -> list[bytes]:
    if isinstance(value, dict):
        if value.get("_type") == PICKLED and isinstance(value.get("value"), str):
            try:
                return [bytes.fromhex(value["value"])]
            except ValueError:
                return []
        return [blob for item in value.values() for blob in _pickled_blobs(item)]
    if isinstance(value, list):
        return [blob for item in value for blob in _pickled_blobs(item)]
    return []


def named_checkpoints(state: Any) -> dict[str, set[str]]:
    """Trial folder name → the checkpoint folder names an experiment state names for it.

    A restore hands each trial the checkpoint its snapshot names and fails the trial when that
    folder is gone, so none of these may be deleted (study.execute.retention). Raises
    ValueError for a state that is not Tune's (no `trial_data` pairs of JSON texts).
    """
    if not isinstance(state, dict):
        raise ValueError("not an experiment state")
    named: dict[str, set[str]] = {}
    for pair in state.get("trial_data", []):
        trial, metadata = json.loads(pair[0]), json.loads(pair[1])
        folder = trial.get("relative_logdir")
        if not isinstance(folder, str):
            continue
        found = set(_CHECKPOINT_NAME.findall(pair[1].encode()))
        for blob in _pickled_blobs(metadata) + _pickled_blobs(trial):
            found.update(_CHECKPOINT_NAME.findall(blob))
        named[folder] = {name.decode() for name in found}
    return named
