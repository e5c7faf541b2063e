"""Build a new Tuner for a study, or restore an interrupted one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from study.execute.asha import bind_state, make_scheduler, searcher_limit, slot_search_alg
from study.execute.progress import ProgressLine
from study.execute.retention import CheckpointRetention
from study.execute.search import param_space, search_alg
from study.execute.tracker_callbacks import tracker_callbacks
from study.execute.trainable import AdapterSettings, make_trainable
from study.execute.writer import TrialsWriter
from study.plan import Plan, StudySpec
from study.plan.schedulers import STATE_FILE
from study.ray_internals import skip_callback_usage_count, write_snapshots_atomically
from study.store.fs import StudyPaths


def trainable(spec: StudySpec, name: str) -> Any:
    """The study's function trainable with its per-trial resources attached."""
    fn = make_trainable(
        AdapterSettings(
            study=name, checkpoint_every=spec.checkpoint_every, code_version=spec.code_version
        )
    )
    resources = {"cpu": spec.cpus_per_trial}
    if spec.gpus_per_trial:
        resources["gpu"] = spec.gpus_per_trial
    return tune.with_resources(fn, resources)


@contextlib.contextmanager
def no_tensorboard() -> Iterator[None]:
    """Around `Tuner.fit()`: keep Tune's JSON and CSV result files but not its TensorBoard
    logger, which imports torch into the driver (seconds of start-up) and writes every report once
    more; the results are in Parquet. The study passes the two loggers it keeps explicitly.
    Tune reads the switch when fit() starts; the caller's environment is restored after."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def build_tuner(
    spec: StudySpec,
    plan: Plan,
    paths: StudyPaths,
    callbacks: Sequence[tune.Callback] = (),
    out: TextIO | None = None,
    estimate_s: float | None = None,
) -> tune.Tuner:
    """A fresh Tuner that writes Tune's experiment into `<storage>/<name>/`."""
    skip_callback_usage_count()
    write_snapshots_atomically()
    local_dir = paths.experiment if paths.storage.is_local else None
    trackers = tracker_callbacks(spec.trackers, paths.name, local_dir)
    scheduler = make_scheduler(
        spec.scheduler,
        spec.grace_period,
        spec.reduction_factor,
        paths.name,
        (paths.storage.fs, f"{paths.experiment}/{STATE_FILE}"),
        plan=plan,
        max_concurrent=spec.max_concurrent,
    )
    limit = searcher_limit(scheduler, plan, spec.max_concurrent)  # 0 where the scheduler holds it
    slots = slot_search_alg(scheduler, plan, spec.max_concurrent, paths.name)
    run_config = tune.RunConfig(
        name=paths.name,
        # The filesystem study.store.fs built from --storage, query options included; its
        # path is then the root on it. Trials get it pickled, and a resume passes it again.
        storage_path=paths.storage.root,
        storage_filesystem=paths.storage.fs,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # Tune keeps every checkpoint: its own num_to_keep deleted checkpoints that the
        # snapshot on storage still named. CheckpointRetention deletes the ones no snapshot
        # can name (study.execute.retention).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[
            TrialsWriter(paths.name),
            ProgressLine(
                paths.name,
                plan.total_trials,
                plan.metric,
                plan.mode,
                stream=out,
                estimate_s=estimate_s,
            ),
            JsonLoggerCallback(),  # result.json per trial: Tune's own record, checked by tests
            CSVLoggerCallback(),
            *trackers,
            *callbacks,
            CheckpointRetention(),  # last: its on_experiment_end deletes checkpoints
        ],
        verbose=0,
    )
    tune_config = tune.TuneConfig(
        metric=plan.metric,
        mode=plan.mode,
        search_alg=slots if slots is not None else search_alg(plan, limit),
        scheduler=scheduler,
        num_samples=plan.tune_num_samples,
        max_concurrent_trials=limit or None,
        reuse_actors=True,  # a new actor pays a fresh process and the torch import
    )
    return tune.Tuner(
        trainable(spec, paths.name),
        param_space=param_space(plan),
        tune_config=tune_config,
        run_config=run_config,
    )


def restore_tuner(spec: StudySpec, paths: StudyPaths, retry_errored: bool) -> tune.Tuner:
    """Continue unfinished trials; errored ones only when asked; finished ones never.

    Tune restores its RunConfig (callbacks included) and searcher from the experiment, and
    the scheduler it pickled at the start: that one reloads its races from the study's folder.
    """
    skip_callback_usage_count()
    write_snapshots_atomically()
    if spec.scheduler != "fifo":
        bind_state(paths.name, (paths.storage.fs, f"{paths.experiment}/{STATE_FILE}"))
    return tune.Tuner.restore(
        # Tune resolves a bare URI itself, dropping an S3 endpoint's query options (it then
        # asks AWS): the study's own filesystem and the path on it keep them.
        paths.experiment,
        storage_filesystem=paths.storage.fs,
        trainable=trainable(spec, paths.name),
        resume_unfinished=True,
        resume_errored=retry_errored,
    )
