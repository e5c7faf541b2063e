"""argv or keyword options become one validated request: the spec of the study (new, or read
back from its study.json), its paths made absolute once, and whether it resumes. Reads the
storage, never writes it; no Ray."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from search_spaces import Space
from study.errors import StudyError, StudyInputError, StudyLockError, StudyStorageError
from study.request.space import default_num_samples, definition, get_space, source_of
from study.request.spec import StudySpec, check_same, definition_differences, now_iso
from study.store.fs import StudyPaths, check_name, read_json, resolve_storage
from study.store.state import check_fresh, check_resumable, finished_trials
from trainables import TrialConfig, parse_override

DEFAULT_STORAGE = "studies"


@dataclass
class StudyOptions:
    """What a user asks for; None means "not given" (a default, or remembered on resume)."""

    space: str | Space | None = None  # a built-in's name, a .toml space file, or a Space
    name: str | None = None
    storage: str = DEFAULT_STORAGE
    resume: bool = False
    # a new study, or else the existing one of that name continued (or reported when finished)
    resume_if_exists: bool = False
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
    scheduler: str | None = None  # fifo | asha (study.plan.schedulers)
    grace_period: int | None = None
    reduction_factor: float | None = None
    trackers: Sequence[str] | None = None  # mlflow | wandb | tensorboard (study.plan.trackers)


@dataclass(frozen=True)
class Request:
    """One validated request: what to run, where, and whether it continues a study."""

    spec: StudySpec
    paths: StudyPaths
    resume: bool
    address: str | None = None  # a cluster to attach to; None: the embedded Ray
    # a new study's command run again on the existing study (same definition): the service
    # reports it when it is finished, and continues it only with --resume-if-exists
    repeat: bool = False


# ---------------------------------------------------------------- validation (no side effects)


def parse_overrides(texts: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` strings → typed values; the last of a repeated key wins."""
    out: dict[str, Any] = {}
    for text in texts:
        try:
            key, value = parse_override(text)
        except ValueError as exc:
            raise StudyInputError(f"--set {text}: {exc}") from None
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
            raise StudyInputError(f"{flag} {value}: must be an int >= {least}")
    check_resource_values(
        options.cpus_per_trial if options.cpus_per_trial is not None else 1.0,
        options.gpus_per_trial if options.gpus_per_trial is not None else 0.0,
    )


def check_resource_values(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Shape checks that need no cluster."""
    if not (math.isfinite(cpus_per_trial) and cpus_per_trial > 0):
        raise StudyInputError(
            f"--cpus-per-trial {cpus_per_trial:g}: must be a number > 0, e.g. 1 or 0.5"
        )
    if not (math.isfinite(gpus_per_trial) and gpus_per_trial >= 0):
        raise StudyInputError(
            f"--gpus-per-trial {gpus_per_trial:g}: must be a number >= 0, e.g. 0.25"
        )
    for flag, value in (("--cpus-per-trial", cpus_per_trial), ("--gpus-per-trial", gpus_per_trial)):
        # Ray keeps resource quantities in units of 0.0001 and rejects finer ones with a
        # traceback once the study exists.
        if abs(value * 10_000 - round(value * 10_000)) > 1e-6:
            raise StudyInputError(
                f"{flag} {value:g}: Ray's resolution is 0.0001; use at most 4 decimal places"
            )
    if gpus_per_trial > 1 and not float(gpus_per_trial).is_integer():
        raise StudyInputError(
            f"--gpus-per-trial {gpus_per_trial:g}: a fraction must be < 1; "
            "above 1 use whole GPUs (Ray's rule)"
        )


def new_spec(options: StudyOptions, space: Space | None = None) -> StudySpec:
    """The spec of a new study from the options, defaults filled in (`space`: the options'
    space when the caller has resolved it already)."""
    if not options.space:
        raise StudyInputError("--space is required for a new study; see --list for the spaces")
    space = space or get_space(options.space)
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
        # the space is kept with the study, built-ins too: a resume needs the file no more, and
        # a repeated command can tell whether the space changed since
        space_definition=definition(space),
        space_source=source_of(options.space),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def read_request(options: StudyOptions) -> Request:
    """Check every input against the spaces, the trial config and storage; touch nothing."""
    _check_counts(options)
    if options.retry_errored and not (options.resume or options.resume_if_exists):
        raise StudyInputError("--retry-errored applies to --resume only (or --resume-if-exists)")
    if not options.resume and not options.space:
        raise StudyInputError("--space is required for a new study; see --list for the spaces")
    if options.resume and not (options.name or options.space):
        raise StudyInputError("--resume needs --name: the study to continue")
    # An unknown space (or a bad space file) is named as such, before the name; a file's
    # space names the study by its own name, not by the file's path.
    space = get_space(options.space) if options.space else None
    space_name = space.name if space is not None else ""
    # An explicit empty --name is refused, not silently replaced by the space's name.
    name = check_name(options.name if options.name is not None else space_name, "--name")
    paths = StudyPaths(resolve_storage(options.storage), name)
    if not options.resume:
        exists = _existing(paths)
        if exists is None:
            return Request(spec=new_spec(options, space), paths=paths, resume=False,
                           address=options.address)  # fmt: skip
        if paths.storage.fs.get_file_info(paths.spec).type == pafs.FileType.NotFound:
            raise exists  # a folder, but no study in it (yet): refused as before
        # The same command again (README, "Running a study"): allowed only for the same study.
        spec = _saved_spec(paths)
        changed = definition_differences(spec, new_spec(options, space))
        if changed:
            raise StudyInputError(
                f"study {name!r} already exists at {paths.display(paths.experiment)} with "
                f"another definition ({'; '.join(changed)}); choose another --name, or repeat "
                "the study's own options"
            )
    else:
        spec = _saved_spec(paths)
    finished_trials(paths)  # a damaged trials.parquet is named now, before anything changes
    given = {f.name: getattr(options, f.name, None) for f in dataclasses.fields(StudySpec)}
    given["overrides"] = parse_overrides(options.overrides)
    if "data_dir" in given["overrides"]:  # remembered as an absolute path
        data_dir = os.path.abspath(os.path.expanduser(given["overrides"].pop("data_dir")))
        if data_dir != spec.data_dir:
            raise StudyInputError(
                f"study {name!r} was created with --set data_dir={spec.data_dir}, not "
                f"{data_dir}; a resume continues the same study: repeat it or leave it out"
            )
    given["smoke"] = options.smoke
    check_same(spec, given, name)
    return Request(spec=spec, paths=paths, resume=True, address=options.address,
                   repeat=not options.resume)  # fmt: skip


def _existing(paths: StudyPaths) -> StudyError | None:
    """None when no study of this name exists (a stale lock alone is none), else the error a
    new study of that name is refused with; StudyLockError when a live driver of this host
    holds it."""
    try:
        check_fresh(paths)
    except StudyLockError:
        raise
    except StudyError as exc:
        return exc
    return None


def _saved_spec(paths: StudyPaths) -> StudySpec:
    """The spec in the study's study.json, once its Tune state is known to be resumable."""
    check_resumable(paths)
    try:
        saved = read_json(paths.storage.fs, paths.spec)
    except (OSError, ValueError) as exc:
        raise StudyStorageError(
            f"cannot resume: {paths.display(paths.spec)} is unreadable ({exc})"
        ) from None
    return StudySpec.from_json(saved, paths.display(paths.spec))


def code_version() -> str:
    """The ilstudy version, plus the git commit (and `.dirty`) when run from a checkout."""
    try:
        version = importlib.metadata.version("ilstudy")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parents[2]  # the checkout: study/request/ is two below
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
