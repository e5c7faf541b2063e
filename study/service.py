"""The study service as a library: validate everything, then run or resume one study."""

from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from search_spaces import from_file
from study.cluster import check_reachable, check_resource_values
from study.errors import StudyError
from study.lock import Lock, acquire, lock_path, release
from study.plan import Plan, build_plan, default_num_samples, get_space
from study.ray_internals import check_ray_version
from study.results import ENDED, Status
from study.spec import StudySpec, check_same, now_iso
from study.storage import (
    StudyPaths,
    check_fresh,
    check_name,
    check_resumable,
    finished_trials,
    read_json,
    resolve_storage,
    trial_statuses,
    write_json_atomic,
)
from trainables import TrialConfig, parse_override

DEFAULT_STORAGE = "studies"
EXIT_OK, EXIT_ERRORED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class StudyOptions:
    """What a user asks for; None means "not given" (a default, or remembered on resume)."""

    space: str | None = None
    name: str | None = None
    storage: str = DEFAULT_STORAGE
    resume: bool = False
    retry_errored: bool = False
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    num_samples: int | None = None
    searcher: str | None = None
    overrides: Sequence[str] = ()
    smoke: bool = False
    checkpoint_every: int | None = None
    max_failures: int | None = None
    verbose: bool = False
    break_lock: bool = False  # take over a lock held from another host (its driver is gone)
    scheduler: str | None = None  # fifo | asha (study.schedulers)
    grace_period: int | None = None
    reduction_factor: float | None = None
    trackers: Sequence[str] | None = None  # mlflow | wandb | tensorboard (study.trackers)


@dataclass
class Prepared:
    spec: StudySpec
    plan: Plan
    paths: StudyPaths
    resume: bool


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


# ---------------------------------------------------------------- validation (no side effects)


def parse_overrides(texts: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` strings → typed values; the last of a repeated key wins."""
    out: dict[str, Any] = {}
    for text in texts:
        try:
            key, value = parse_override(text)
        except ValueError as exc:
            raise StudyError(f"--set {text}: {exc}") from None
        if key == "data_path" and value:  # trials run in their own folders
            value = os.path.abspath(os.path.expanduser(value))
        out[key] = value
    return out


def _check_counts(options: StudyOptions) -> None:
    checks = (
        ("--num-samples", options.num_samples, 1),
        ("--max-concurrent", options.max_concurrent, 1),
        ("--checkpoint-every", options.checkpoint_every, 0),
        ("--max-failures", options.max_failures, 0),
    )
    for flag, value, least in checks:
        if value is not None and value < least:
            raise StudyError(f"{flag} {value}: must be an int >= {least}")
    check_resource_values(
        options.cpus_per_trial if options.cpus_per_trial is not None else 1.0,
        options.gpus_per_trial if options.gpus_per_trial is not None else 0.0,
    )


def new_spec(options: StudyOptions) -> StudySpec:
    """The spec of a new study from the options, defaults filled in."""
    if not options.space:
        raise StudyError("--space is required for a new study; see --list for the spaces")
    space = get_space(options.space)
    searcher = options.searcher or space.searcher
    overrides = parse_overrides(options.overrides)
    data_dir = overrides.pop(
        "data_dir", space.fixed.get("data_dir", TrialConfig.defaults()["data_dir"])
    )
    scheduler = options.scheduler or "fifo"
    return StudySpec(
        space=space.name,
        searcher=searcher,
        scheduler=scheduler,
        grace_period=_or(options.grace_period, 0),
        reduction_factor=_or(options.reduction_factor, 3.0),
        trackers=list(dict.fromkeys(options.trackers or ())),
        # --smoke shrinks the budget too: a smoke run of a 40-trial space is a few trials
        num_samples=options.num_samples
        or default_num_samples(space.smoke_version() if options.smoke else space, searcher),
        overrides=overrides,
        smoke=options.smoke,
        data_dir=os.path.abspath(os.path.expanduser(str(data_dir))),
        cpus_per_trial=_or(options.cpus_per_trial, 1.0),
        gpus_per_trial=_or(options.gpus_per_trial, 0.0),
        max_concurrent=_or(options.max_concurrent, 0),
        max_failures=_or(options.max_failures, 3),
        # ASHA may stop a trial after any record: each record is checkpointed, so a stopped
        # trial's file holds every row it reported
        checkpoint_every=_or(options.checkpoint_every, 1 if scheduler != "fifo" else 10),
        code_version=code_version(),
        created_at=now_iso(),
        # a file's space is kept with the study: a resume needs the file no more
        space_definition=(
            from_file.definition(space) if from_file.is_space_file(options.space) else None
        ),
    )


def _check_early_stopping(spec: StudySpec, plan: Plan) -> None:
    """A scheduler only where it is honest (study.schedulers), and trackers that exist."""
    from study.schedulers import check_scheduler
    from study.trackers import check_trackers

    swept = [*plan.space.grid, *plan.space.distributions]
    check_scheduler(spec.scheduler, plan.metric, swept, spec.grace_period, spec.reduction_factor)
    check_trackers(spec.trackers)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def prepare(options: StudyOptions) -> Prepared:
    """Check every input against the spaces, the trial config and storage; touch nothing."""
    _check_counts(options)
    if options.retry_errored and not options.resume:
        raise StudyError("--retry-errored applies to --resume only")
    if not options.resume and not options.space:
        raise StudyError("--space is required for a new study; see --list for the spaces")
    if options.resume and not (options.name or options.space):
        raise StudyError("--resume needs --name: the study to continue")
    # An unknown space (or a bad space file) is named as such, before the name; a file's
    # space names the study by its own name, not by the file's path.
    space_name = get_space(options.space).name if options.space else ""
    # An explicit empty --name is refused, not silently replaced by the space's name.
    name = check_name(options.name if options.name is not None else space_name, "--name")
    paths = StudyPaths(resolve_storage(options.storage), name)
    if not options.resume:
        check_fresh(paths)
        spec = new_spec(options)
        plan = build_plan(spec)
        _check_early_stopping(spec, plan)
        return Prepared(spec=spec, plan=plan, paths=paths, resume=False)
    check_resumable(paths)
    try:
        saved = read_json(paths.storage.fs, paths.spec)
    except (OSError, ValueError) as exc:
        raise StudyError(
            f"cannot resume: {paths.display(paths.spec)} is unreadable ({exc})"
        ) from None
    spec = StudySpec.from_json(saved, paths.display(paths.spec))
    finished_trials(paths)  # a damaged trials.parquet is named now, before anything changes
    given = {f.name: getattr(options, f.name, None) for f in dataclasses.fields(StudySpec)}
    given["overrides"] = parse_overrides(options.overrides)
    if "data_dir" in given["overrides"]:  # remembered as an absolute path
        data_dir = os.path.abspath(os.path.expanduser(given["overrides"].pop("data_dir")))
        if data_dir != spec.data_dir:
            raise StudyError(
                f"study {name!r} was created with --set data_dir={spec.data_dir}, not "
                f"{data_dir}; a resume continues the same study: repeat it or leave it out"
            )
    given["smoke"] = options.smoke
    check_same(spec, given, name)
    return Prepared(spec=spec, plan=build_plan(spec), paths=paths, resume=True)


def code_version() -> str:
    """The ilstudy version, plus the git commit (and `.dirty`) when run from a checkout."""
    try:
        version = importlib.metadata.version("ilstudy")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}" + (".dirty" if dirty else "")


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
    from study.cluster import check_resources, check_shared_storage, connect

    # The study lock comes first: before Ray starts and before anything else of the study is
    # written, so two drivers of one study never both run (issue 13, items 1 and 2).
    held = claim(prepared, options)
    try:
        connection = connect(options.address, verbose=options.verbose)
        try:
            spec, paths = prepared.spec, prepared.paths
            check_resources(spec.cpus_per_trial, spec.gpus_per_trial)
            check_shared_storage(paths.storage)
            return _fit(prepared, options, callbacks, out)
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
    from study.tuner import build_tuner, no_tensorboard, restore_tuner

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
        lost = _prepare_resume(paths, out)
        tuner = restore_tuner(spec, paths, retry_errored=options.retry_errored)
    else:
        write_json_atomic(paths.storage.fs, paths.spec, spec.to_json())
        tuner = build_tuner(spec, plan, paths, callbacks, out=out, estimate_s=_estimate(prepared))
    with no_tensorboard():
        try:
            tuner.fit()
        except Exception as exc:
            failure = _storage_failure(exc)
            if failure is None:
                raise
            raise StudyError(
                f"cannot write {failure.filename or paths.display(paths.experiment)}: "
                f"{failure.strerror}; free space (or fix the storage), then resume with: "
                f"{resume_command(paths)}"
            ) from None
    total = plan.total_trials
    if spec.searcher == "adaptive":  # its searcher may end the study before num_samples
        from study.adaptive import stopped_at

        total = stopped_at(paths.storage.fs, paths.experiment) or total
    outcome = Outcome(paths=paths, total=total, wall_s=time.time() - t0, lost=lost)
    outcome.counts = trial_counts(paths)
    _print_summary(outcome, spec, out)
    return outcome


def _prepare_resume(paths: StudyPaths, out: TextIO) -> list[str]:
    """With the lock held, before Tune restores: the snapshot chosen by content and made the
    only one Tune sees; Tune's view of errored trials corrected; every finished trial's metrics
    file verified against its checkpoint. Returns the files that could not be recovered."""
    from study.reconcile import reconcile_errored
    from study.snapshots import keep_only, prune_driver_staging
    from study.verify import verify_finished

    chosen = PurePosixPath(check_resumable(paths)).name  # again, now that the study is ours
    keep_only(paths, chosen)
    prune_driver_staging(paths.name, chosen)
    reconcile_errored(paths)  # Tune's snapshot may miss a trial's ERROR (Ray race)
    rewritten, lost = verify_finished(paths, finished_trials(paths))
    for path in rewritten:
        print(f"rewrote {path} from its trial's last checkpoint", file=out, flush=True)
    return lost


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO}


def _storage_failure(exc: BaseException) -> OSError | None:
    """The storage error (disk full, quota, read-only, I/O) behind `exc`, if that is its cause:
    Tune raises a driver callback's error as it is or wrapped, so the chain is searched."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _estimate(prepared: Prepared) -> float | None:
    """Expected run time from the space's calibrated trial time, on this cluster's CPUs."""
    import ray

    from study.plan import estimate_seconds

    if prepared.spec.smoke or prepared.spec.overrides:
        return None  # the space's timing is for its own defaults
    cpus = ray.cluster_resources().get("CPU", 1.0)
    plan = prepared.plan
    builtin = prepared.spec.space_definition is None
    return estimate_seconds(
        plan.space, plan.total_trials, cpus, prepared.spec.cpus_per_trial, builtin=builtin
    )


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
        + f") in {mins}:{secs:02d}",
        file=out,
    )
    print(f"metrics: {paths.display(paths.metrics)}/  (one row per trial and step)", file=out)
    print(f"trials:  {paths.display(paths.trials)}", file=out)
    print(
        f"phases:  {paths.display(paths.phases)}/  (one row per trial and feature update)", file=out
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
    if "://" in path:
        return path
    try:
        rel = PurePosixPath(path).relative_to(os.getcwd())
    except ValueError:
        return path
    return str(rel) or "."
