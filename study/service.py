"""The study service as a library: validate everything, then run or resume one study."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TextIO

from study.errors import StudyError, StudyInputError, StudyStorageError
from study.execute.cluster import check_ray_version, check_reachable
from study.plan import Prepared, plan_request
from study.request.options import (
    DEFAULT_STORAGE,
    StudyOptions,
    code_version,
    new_spec,
    parse_overrides,
    read_request,
)
from study.request.spec import StudySpec
from study.store.faults import fault_message, storage_fault, vanished_message
from study.store.fs import StudyPaths, write_json_atomic
from study.store.layout import ENDED, Status
from study.store.lock import Lock, acquire, lock_path, release
from study.store.state import trial_statuses

# The internal layer under study.api (the public Python API, README "Python API"): the one path
# of the CLI and the API; names kept here for callers of the first, internal API.
__all__ = [
    "DEFAULT_STORAGE",
    "EXIT_BAD_INPUT",
    "EXIT_ERRORED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Outcome",
    "Prepared",
    "StudyOptions",
    "code_version",
    "new_spec",
    "parse_overrides",
    "prepare",
    "run_study",
]

EXIT_OK, EXIT_ERRORED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Outcome:
    """How a study run ended."""

    paths: StudyPaths
    total: int
    counts: dict[str, int] = field(default_factory=dict)  # status → trials
    wall_s: float = 0.0
    lost: list[str] = field(default_factory=list)  # finished trials' metrics files not recovered

    @property
    def finished(self) -> int:
        """Trials that will not run again, errors aside (a scheduler's STOPPED included)."""
        return sum(self.counts.get(status, 0) for status in ENDED)

    @property
    def exit_code(self) -> int:
        if self.counts.get(Status.ERROR, 0) or self.lost:
            return EXIT_ERRORED
        return EXIT_OK if self.finished >= self.total else EXIT_INTERRUPTED


def prepare(options: StudyOptions) -> Prepared:
    """Check every input against the spaces, the trial config, storage and this machine; touch
    nothing and start no Ray."""
    return plan_request(read_request(options))


# ---------------------------------------------------------------- running


def run_study(
    options: StudyOptions, callbacks: Sequence[Any] = (), out: TextIO | None = None
) -> Outcome:
    """Validate, connect, check the cluster, then run or resume the study to its end."""
    out = out or sys.stdout
    check_ray_version()  # before anything touches Ray: its internals are used (ray_internals)
    prepared = prepare(options)
    if options.address:
        check_reachable(options.address)
    from study.execute.cluster import check_resources, check_shared_storage, connect
    from study.execute.storage_guard import StorageGuard

    # The study lock comes first: before Ray starts and before anything else of the study is
    # written, so two drivers of one study never both run (issue 13, items 1 and 2).
    held = claim(prepared, options)
    try:
        if prepared.resume and not options.resume:  # a new study's command, run again
            complete = report_if_complete(prepared, options, out)
            if complete is not None:
                return complete
        connection = connect(options.address, verbose=options.verbose)
        try:
            spec, paths = prepared.spec, prepared.paths
            check_resources(spec.cpus_per_trial, spec.gpus_per_trial)
            check_shared_storage(paths.storage)
            try:
                return _fit(prepared, options, [StorageGuard(), *callbacks], out)
            except Exception as exc:
                error = _storage_error(exc, paths)
                if error is None:
                    raise
                raise error from None
        finally:
            connection.close()
    finally:
        # A new study refused before it wrote anything leaves no folder behind.
        release(held, remove_created_dir=True)


def claim(prepared: Prepared, options: StudyOptions) -> Lock:
    """Take the study lock (a new study: create its folder, atomically); StudyError if held or
    the storage cannot be written."""
    paths = prepared.paths
    try:
        return acquire(
            paths.storage.fs,
            paths.experiment,
            create_dir=not prepared.resume,
            break_lock=options.break_lock,
            display=paths.display(lock_path(paths.experiment)),
        )
    except OSError as exc:
        raise StudyError(
            f"--storage {paths.storage.uri} is not writable "
            f"({exc.strerror or type(exc).__name__}: {exc.filename or paths.experiment}); "
            "give a directory this user can write"
        ) from None


def _fit(
    prepared: Prepared, options: StudyOptions, callbacks: Sequence[Any], out: TextIO
) -> Outcome:
    from study.execute.resume import prepare_resume
    from study.execute.tuner import build_tuner, no_tensorboard, restore_tuner

    spec, plan, paths = prepared.spec, prepared.plan, prepared.paths
    verb = "resuming" if prepared.resume else "starting"
    print(
        f"{verb} study {paths.name!r}: space {spec.space}{' (smoke)' if spec.smoke else ''}, "
        f"{plan.total_trials} trials, searcher {spec.searcher}, "
        f"{spec.cpus_per_trial:g} CPU + {spec.gpus_per_trial:g} GPU per trial "
        f"-> {paths.display(paths.experiment)}",
        file=out,
        flush=True,
    )
    t0 = time.time()
    lost: list[str] = []
    if prepared.resume:
        lost = prepare_resume(paths, out)
        tuner = restore_tuner(spec, paths, retry_errored=options.retry_errored)
    else:
        write_json_atomic(paths.storage.fs, paths.spec, spec.to_json())
        tuner = build_tuner(spec, plan, paths, callbacks, out=out, estimate_s=_estimate(prepared))
    with no_tensorboard():
        tuner.fit()
    total = plan.total_trials
    if spec.searcher == "adaptive":  # its searcher may end the study before num_samples
        from study.execute.adaptive_searcher import stopped_at

        total = stopped_at(paths.storage.fs, paths.experiment) or total
    outcome = Outcome(paths=paths, total=total, wall_s=time.time() - t0, lost=lost)
    outcome.counts = trial_counts(paths)
    _print_summary(outcome, spec, out)
    return outcome


def _storage_error(exc: BaseException, paths: StudyPaths) -> StudyStorageError | None:
    """The one-line error for a storage fault behind `exc` (disk full, read-only, denied, I/O,
    the study folder gone), or None when `exc` is not one. Tune raises a driver callback's
    error as it is or wrapped, and a trial's inside Ray's, so the chain is searched."""
    if isinstance(exc, StudyError):
        return None
    from pyarrow.fs import FileType

    try:
        lock = paths.storage.fs.get_file_info(lock_path(paths.experiment))
        missing = lock.type == FileType.NotFound
    except OSError:
        missing = False
    fault = storage_fault(exc, missing=missing)
    if fault is None:
        return None
    if missing:
        shown = paths.display(fault.filename or lock_path(paths.experiment))
        return StudyStorageError(vanished_message(paths.display(paths.experiment), shown))
    resume = resume_command(paths)
    return StudyStorageError(fault_message(fault, paths.display(paths.experiment), resume))


def _estimate(prepared: Prepared) -> float | None:
    """Expected run time from the space's calibrated trial time, on this cluster's CPUs."""
    from study.execute.cluster import cluster_cpus
    from study.plan import estimate_seconds

    if prepared.spec.smoke or prepared.spec.overrides:
        return None  # the space's timing is for its own defaults
    cpus = cluster_cpus()
    plan = prepared.plan
    builtin = prepared.spec.source == "builtin"
    return estimate_seconds(
        plan.space, plan.total_trials, cpus, prepared.spec.cpus_per_trial, builtin=builtin
    )


def report_if_complete(prepared: Prepared, options: StudyOptions, out: TextIO) -> Outcome | None:
    """The same command again on its existing study (lock held): when no trial is left to run,
    verify the finished trials' files as a resume does and report the study, running nothing.
    None when trials are left and `--resume-if-exists` continues them; StudyInputError when
    trials are left and it was not given."""
    paths = prepared.paths
    total = prepared.plan.total_trials
    if prepared.spec.searcher == "adaptive":  # its searcher may have ended the study early
        from study.execute.adaptive_searcher import stopped_at

        total = stopped_at(paths.storage.fs, paths.experiment) or total
    counts = trial_counts(paths)
    ended = sum(counts.get(status, 0) for status in ENDED)
    errored = 0 if options.retry_errored else counts.get(Status.ERROR, 0)
    if ended + errored < total:
        if options.resume_if_exists:
            return None
        raise StudyInputError(
            f"study {paths.name!r} already exists at {paths.display(paths.experiment)} and is "
            f"unfinished ({ended}/{total} trials ended); continue it with --resume-if-exists "
            "(or --resume), or choose another --name"
        )
    from study.execute.resume import verify_finished
    from study.store.state import finished_trials

    rewritten, lost = verify_finished(paths, finished_trials(paths))
    print(
        f"study {paths.name!r} already ran to its end at {paths.display(paths.experiment)}: "
        "its files are verified, nothing to run",
        file=out,
    )
    for path in rewritten:
        print(f"rewrote {path} from its trial's last checkpoint", file=out)
    outcome = Outcome(paths=paths, total=total, counts=trial_counts(paths), lost=lost)
    _print_summary(outcome, prepared.spec, out)
    return outcome


def trial_counts(paths: StudyPaths) -> dict[str, int]:
    """Trials per status, from trials.parquet."""
    return dict(Counter(trial_statuses(paths).values()))


def _print_summary(outcome: Outcome, spec: StudySpec, out: TextIO) -> None:
    paths, c = outcome.paths, outcome.counts
    mins, secs = divmod(int(outcome.wall_s), 60)
    print(
        f"{outcome.finished}/{outcome.total} trials finished "
        f"({c.get(Status.DIVERGED, 0)} diverged, {c.get(Status.ERROR, 0)} errored"
        + (f", {c[Status.STOPPED]} stopped by the scheduler" if c.get(Status.STOPPED) else "")
        + (f") in {mins}:{secs:02d}" if outcome.wall_s else ")"),  # none: a report of a done study
        file=out,
    )
    print(f"metrics: {paths.display(paths.metrics + '/')}  (one row per trial and step)", file=out)
    print(f"trials:  {paths.display(paths.trials)}", file=out)
    print(
        f"phases:  {paths.display(paths.phases + '/')}  (one row per trial and feature update)",
        file=out,
    )
    for path in outcome.lost:
        print(f"lost:    {path} (missing or unreadable, and its checkpoint is gone)", file=out)
    if outcome.exit_code == EXIT_INTERRUPTED:
        print(f"interrupted; continue with: {resume_command(paths)}", file=out)
    elif outcome.exit_code == EXIT_ERRORED:
        print(f"some trials errored; retry them with: {resume_command(paths)} --retry-errored",
              file=out)  # fmt: skip
    print(f"report:  python -m reports {_short(paths.display(paths.experiment))}", file=out)
    out.flush()


def resume_command(paths: StudyPaths) -> str:
    return f"python -m study.run --resume --name {paths.name} --storage {_short(paths.storage.uri)}"


def _short(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    if "://" in path:  # quoted: an S3 endpoint's query has '&', which a shell would split at
        return shlex.quote(path)
    try:
        rel = PurePosixPath(path).relative_to(os.getcwd())
    except ValueError:
        return path
    return str(rel) or "."
