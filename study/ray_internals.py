"""Everything ilstudy takes from Ray beyond its public API, in one place.

Two kinds of things live here: private Ray helpers, and the layout of the files Tune writes
into a study folder (snapshot names, the experiment state's JSON, checkpoint folders, the
driver's staging folder). Each item says why the public API does not suffice. They are
checked against the Ray versions in `TESTED_RAY`, which `pyproject.toml` bounds too;
`check_ray_version` refuses any other version before the driver touches Ray.

Nothing here imports Ray at module level: storage and snapshot checks run before Ray starts.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from study.errors import StudyError

# ---- the tested version range -----------------------------------------------------------
TESTED_RAY = ((2, 50), (2, 61))  # lowest tested, first untested: ray[tune]>=2.50,<2.61


def installed_ray_version() -> str:
    """Ray's version from its package metadata, without importing Ray (a slow import)."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return ""


def check_ray_version(version: str | None = None) -> None:
    """StudyError unless `version` (default: the installed Ray) is in the tested range."""
    version = installed_ray_version() if version is None else version
    (lo_major, lo_minor), (hi_major, hi_minor) = TESTED_RAY
    wanted = f"ray[tune]>={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"
    match = re.match(r"^(\d+)\.(\d+)", version)
    if not version or match is None:
        raise StudyError(f"Ray is not installed (or has no version); install {wanted}")
    release = (int(match.group(1)), int(match.group(2)))
    if not TESTED_RAY[0] <= release < TESTED_RAY[1]:
        raise StudyError(
            f"Ray {version} is installed, but ilstudy is tested with {wanted} only: it relies on "
            "Tune's internals and file layout (study.ray_internals); install a tested version"
        )


# ---- Tune's files in the study folder -----------------------------------------------------
# Tune offers no API to inspect or choose the experiment snapshot a restore uses, and it
# silently starts over when that snapshot is damaged; the study checks, chooses and repairs
# snapshots itself (study.storage.check_resumable, study.snapshots, study.reconcile), so it
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
# start in local time; study.snapshots keeps one session's files only.
SESSION_FILE = re.compile(
    r"^(experiment_state|searcher-state|search_gen_state|basic-variant-state|callback-states)"
    r"-(?P<session>.+)\.(json|pkl)$"
)
# Tune's folder of one trial checkpoint: `<trial folder>/checkpoint_<index>/`. The public API
# hands a trial only the checkpoint the last snapshot recorded, and the driver none before
# `fit()`; a resume verifies finished trials' files against their checkpoints, and a restored
# trial looks for a newer checkpoint than the snapshot's (study.trainable).
CHECKPOINT_PREFIX = "checkpoint_"
# Trial statuses as Tune writes them into a snapshot (its `Trial` statuses, not ours).
TUNE_UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def stopped_by_tune(last_result: dict) -> bool:
    """Whether Tune ended the trial at this result: a scheduler's STOP (ASHA) or a stop rule.

    Tune's controller sets `done` on the result it decides to stop a trial at, before any
    callback sees it (and on the copy it keeps after a function trainable returns); a trial's
    own results carry `done=False`. Tune has no public flag for "stopped by the scheduler".
    """
    return bool(last_result.get("done"))


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


def driver_staging_folders(experiment_name: str) -> list[str]:
    """This Ray session's local staging folders of the study's driver files, or [] if unknown.

    Tune stages its snapshot and pickles in a local folder of the Ray session and uploads the
    whole folder at each snapshot; it exposes that folder only to a running experiment, and
    a resume must clean it before `fit()` (study.snapshots.prune_driver_staging). The root
    comes from a private helper (`ray.train.constants._get_ray_train_session_dir`), the layout
    below it is `<root>/<timestamp>/<experiment>/driver_artifacts`.
    """
    try:
        from ray.train.constants import _get_ray_train_session_dir

        root = _get_ray_train_session_dir()
    except Exception:
        return []
    pattern = os.path.join(glob.escape(root), "*", glob.escape(experiment_name), "driver_artifacts")
    return glob.glob(pattern)


# ---- private Ray APIs -----------------------------------------------------------------------
# The embedded Ray starts no idle workers when the driver connects: Tune's trial actors carry a
# runtime_env (env_vars), so Ray never gives them those workers, which only take CPU from the
# first trials while they start. Only `ray.init(_system_config=...)` (private) can say so.
EMBEDDED_INIT = {"_system_config": {"prestart_worker_first_driver": False}}


def stop_autoscaler_monitor() -> None:
    """Kill the embedded Ray's autoscaler monitor before `ray.shutdown()`, which would wait
    about a second for it.

    The shutdown stops the GCS before the monitor; the monitor's SIGTERM handler then tries to
    report its own termination to the dead GCS until Ray SIGKILLs it a second later. A local
    Ray has nothing to autoscale, so the monitor has nothing to finish. No public API lists
    Ray's own processes: this goes through `ray._private.worker._global_node`. Best effort:
    a no-op wherever that is missing (the shutdown is then just slower).
    """
    try:
        from ray._private import ray_constants, worker

        node = worker._global_node
        infos = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node else []
    except (ImportError, AttributeError):
        return
    for info in infos:
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class TrialStorage:
    """Where one trial's files live: the storage filesystem and paths on it."""

    fs: Any  # pyarrow.fs.FileSystem
    experiment: str  # `<storage>/<study>` on fs
    trial_dir_name: str | None  # the trial folder's name in the study folder (None: not yet)

    @property
    def trial(self) -> str:
        """`<storage>/<study>/<trial folder>` on fs."""
        return f"{self.experiment.rstrip('/')}/{self.trial_dir_name}"


def _storage(context: Any) -> TrialStorage:
    return TrialStorage(
        fs=context.storage_filesystem,
        experiment=context.experiment_fs_path,
        trial_dir_name=getattr(context, "trial_dir_name", None),
    )


def this_trial_storage() -> TrialStorage:
    """Inside a trial's process: where its study and trial folders are.

    The public API (`tune.get_context()`) gives only local paths, not the storage filesystem
    and paths a trial writes its results and looks for checkpoints on (a cloud URI, or a
    shared folder); Ray's private session holds them (`ray.train._internal.session`).
    """
    from ray.train._internal.session import get_storage

    return _storage(get_storage())


def trial_storage(trial: Any) -> TrialStorage:
    """On the driver, in a Tune callback: where a trial's study and trial folders are.

    Tune hands callbacks its `Trial` objects, whose storage context (`trial.storage`, from
    `ray.train._internal.storage`) is the only source of the experiment's location on
    storage; after a restore it says where the study is now, which the callback (pickled
    with the Tuner) cannot know by itself.
    """
    return _storage(trial.storage)
