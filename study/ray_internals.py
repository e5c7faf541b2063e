"""Everything ilstudy takes from Ray beyond its public API, in one place: private Ray and Tune
names, and the tested Ray version range they hold for.

Each item says why the public API does not suffice. They are checked against the Ray
versions in `TESTED_RAY`, which `pyproject.toml` bounds too; `ray_version_problem` names any
other version, and `study.execute.cluster.check_ray_version` refuses it before the driver
touches Ray. The names of the files Tune writes into a study folder are read without Ray, so
they live in `study.store.tune_files` (same version range).

Imports nothing of `study` (only `execute/` imports this module), and Ray only inside the
functions that need it: importing it is cheap.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from typing import Any

# ---- the tested version range -----------------------------------------------------------
TESTED_RAY = ((2, 50), (2, 61))  # lowest tested, first untested: ray[tune]>=2.50,<2.61


def installed_ray_version() -> str:
    """Ray's version from its package metadata, without importing Ray (a slow import)."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return ""


def ray_version_problem(version: str | None = None) -> str | None:
    """Why `version` (default: the installed Ray) cannot be used, or None when it is tested."""
    version = installed_ray_version() if version is None else version
    (lo_major, lo_minor), (hi_major, hi_minor) = TESTED_RAY
    wanted = f"ray[tune]>={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"
    match = re.match(r"^(\d+)\.(\d+)", version)
    if not version or match is None:
        return f"Ray is not installed (or has no version); install {wanted}"
    release = (int(match.group(1)), int(match.group(2)))
    if not TESTED_RAY[0] <= release < TESTED_RAY[1]:
        return (
            f"Ray {version} is installed, but ilstudy is tested with {wanted} only: it relies on "
            "Tune's internals and file layout (study.ray_internals); install a tested version"
        )
    return None


def stopped_by_tune(last_result: dict) -> bool:
    """Whether Tune ended the trial at this result: a scheduler's STOP (ASHA) or a stop rule.

    Tune's controller sets `done` on the result it decides to stop a trial at, before any
    callback sees it (and on the copy it keeps after a function trainable returns); a trial's
    own results carry `done=False`. Tune has no public flag for "stopped by the scheduler".
    """
    return bool(last_result.get("done"))


def driver_staging_folders(experiment_name: str) -> list[str]:
    """This Ray session's local staging folders of the study's driver files, or [] if unknown.

    Tune stages its snapshot and pickles in a local folder of the Ray session and uploads the
    whole folder at each snapshot; it exposes that folder only to a running experiment, and
    a resume must clean it before `fit()` (study.execute.resume.prune_driver_staging). The root
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


# ---- trial checkpoints: retention and repair ------------------------------------------------
# Tune's `CheckpointConfig(num_to_keep=N)` deletes a trial's older checkpoints as soon as a new
# one registers, although the experiment snapshot on storage (uploaded asynchronously, every
# few seconds) may still name one of them: a resume then fails that trial for good ("Could not
# recover from checkpoint as it does not exist on storage anymore"). The study keeps every
# checkpoint in Tune (num_to_keep=None) and deletes them itself (study.execute.retention). Tune
# then remembers every checkpoint of a trial, and pickles the list into each snapshot: its list
# is cut here, through the trial's private checkpoint manager (`_checkpoint_results`), as no
# public API forgets a checkpoint. A resume whose snapshot names a checkpoint that is gone
# anyway points the trial at another one, in the same private object in the snapshot's JSON.


def forget_checkpoints(trial: Any, keep: int) -> None:
    """Keep only the newest `keep` checkpoints in the trial's in-memory list (no file deleted)."""
    manager = getattr(trial.run_metadata, "checkpoint_manager", None)
    results = getattr(manager, "_checkpoint_results", None)
    if manager is None or not isinstance(results, list) or len(results) <= keep:
        return
    manager._checkpoint_results = results[-keep:] if keep else []
    trial.run_metadata.invalidate_cache()


def _load_manager(metadata_json: str) -> tuple[dict, Any]:
    import cloudpickle

    metadata = json.loads(metadata_json)
    blob = metadata.get("checkpoint_manager")
    if not isinstance(blob, dict) or not isinstance(blob.get("value"), str):
        return metadata, None
    return metadata, cloudpickle.loads(bytes.fromhex(blob["value"]))


def latest_checkpoint_path(metadata_json: str) -> str | None:
    """The path on storage of the checkpoint a trial's snapshot JSON (its run metadata) would
    restore the trial from, or None when it names none."""
    _, manager = _load_manager(metadata_json)
    latest = getattr(manager, "_latest_checkpoint_result", None)
    return None if latest is None else latest.checkpoint.path


def point_at_checkpoint(metadata_json: str, name: str | None, iteration: int) -> str:
    """The trial's run-metadata JSON, restoring from the folder `name` beside the checkpoint it
    named (`iteration`: the records that checkpoint holds), or from none when `name` is None."""
    import cloudpickle
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    metadata, manager = _load_manager(metadata_json)
    latest = getattr(manager, "_latest_checkpoint_result", None)
    if latest is None:
        return metadata_json
    if name is None:
        manager._latest_checkpoint_result = None
        manager._checkpoint_results = []
    else:
        parent = latest.checkpoint.path.rstrip("/").rsplit("/", 1)[0]
        checkpoint = Checkpoint(f"{parent}/{name}", filesystem=latest.checkpoint.filesystem)
        metrics = dict(latest.metrics, training_iteration=iteration, checkpoint_dir_name=name)
        result = _TrainingResult(checkpoint=checkpoint, metrics=metrics)
        manager._latest_checkpoint_result = result
        manager._checkpoint_results = [result]
    metadata["checkpoint_manager"]["value"] = cloudpickle.dumps(manager).hex()
    return json.dumps(metadata, indent=2)


def skip_callback_usage_count() -> None:
    """Do not let Tune count a run's callbacks for Ray's usage statistics when those are off.

    `tune.run` calls `ray.air._internal.usage.tag_callbacks` whenever it is given callbacks
    (a study always is), and that imports Ray's MLflow, W&B and Comet integrations to name the
    built-in ones: with the trackers extra installed, mlflow and wandb themselves, in every
    driver, though no tracker was asked for and the count is sent nowhere when usage
    statistics are off (ilstudy turns them off unless the user turned them on). Only then is
    the call replaced. Idempotent; a no-op where the names are missing.
    """
    try:
        from ray._common.usage.usage_lib import usage_stats_enabled
        from ray.air._internal import usage
    except ImportError:
        return
    if not usage_stats_enabled() and hasattr(usage, "tag_callbacks"):
        usage.tag_callbacks = _no_usage_tag


def _no_usage_tag(callbacks: object) -> bool:
    return False  # what tag_callbacks returns when it records nothing


# Names Tune's `TuneController.save_to_dir` uses, which `_save_to_dir_atomically` repeats: the
# patch is applied only where Tune's method is built from the same parts.
_SAVE_TO_DIR_NAMES = {"_get_trial_checkpoints", "__getstate__", "_start_time", "_storage",
                      "experiment_driver_staging_path", "experiment_state_file_name", "dump",
                      "_search_alg", "_callbacks", "save_to_dir", "_session_str"}  # fmt: skip


def write_snapshots_atomically() -> None:
    """Make Tune write each experiment snapshot into its staging folder in one step.

    Tune's `TuneController.save_to_dir` rewrites `experiment_state-<session>.json` in place
    (`open(path, "w")`, then `json.dump`) in the driver's local staging folder, while the
    upload it launched at the previous snapshot may still be copying that folder to storage
    on a background thread: Tune writes before it checks whether the last upload is done. The
    upload can then read the file empty or half-written and store it over the good snapshot;
    a driver killed before the next upload leaves a study that cannot be resumed (seen on S3:
    an empty object after a SIGKILL). Here the snapshot is written beside the staging folder
    and renamed into it, so an upload reads the old snapshot or the new one, whole.
    Idempotent; a no-op where Tune's method is not built as this one expects.
    """
    try:
        from ray.tune.execution.tune_controller import TuneController
    except ImportError:
        return
    original = TuneController.save_to_dir
    if original is _save_to_dir_atomically:
        return
    names = set(getattr(getattr(original, "__code__", None), "co_names", ()))
    if names >= _SAVE_TO_DIR_NAMES:
        _save_to_dir_atomically.tune_original = original  # type: ignore[attr-defined]
        TuneController.save_to_dir = _save_to_dir_atomically


def _save_to_dir_atomically(self: Any) -> None:
    """`TuneController.save_to_dir` (Ray 2.50-2.60), its snapshot renamed into place."""
    from ray.tune.utils.serialization import TuneFunctionEncoder

    runner_state = {
        "trial_data": list(self._get_trial_checkpoints().values()),
        "runner_data": self.__getstate__(),
        "stats": {"start_time": self._start_time},
    }
    staging = self._storage.experiment_driver_staging_path
    os.makedirs(staging, exist_ok=True)
    name = self.experiment_state_file_name
    # outside the folder the upload copies, on the same filesystem (a rename, not a copy)
    temporary = os.path.join(os.path.dirname(staging), f".{name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as f:
            json.dump(runner_state, f, cls=TuneFunctionEncoder)
        os.replace(temporary, os.path.join(staging, name))
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    self._search_alg.save_to_dir(staging, session_str=self._session_str)
    self._callbacks.save_to_dir(staging, session_str=self._session_str)
