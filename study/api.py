"""The public Python API: run, resume or load a study and get its results as DataFrames.

    import study
    result = study.run_study("smoke", storage="/tmp/studies")
    result.trials      # one row per trial (pandas)
    result.metrics     # one row per trial and step (pandas)

`run_study` and `resume_study` take the CLI's options as keyword arguments, named like its
flags (`--max-concurrent 2` is `max_concurrent=2`, `--set lr=0.1` is `set={"lr": 0.1}`), and
go the CLI's own path: `python -m study.run` parses argv into the same `StudyOptions` and
calls `execute`. Bad input raises `study.StudyError` (`StudyInputError`, `StudyStorageError`,
`StudyLockError`), whose message is the CLI's one line; nothing here calls `sys.exit`.
`load_study` reads a study's files and starts no Ray.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from study.errors import StudyError, StudyInputError, StudyStorageError
from study.request.options import DEFAULT_STORAGE, StudyOptions
from study.store.fs import StudyPaths, check_name, resolve_storage
from study.store.layout import ENDED, Status

if TYPE_CHECKING:
    import pandas as pd

    from search_spaces import Space
    from study.request.spec import StudySpec
    from study.service import Outcome

__all__ = ["StudyResult", "execute", "load_study", "resume_study", "run_study"]

EXIT_OK, EXIT_ERRORED, EXIT_INTERRUPTED = 0, 1, 130

# Keyword options, named like the CLI's flags; `set` and `tracker` are the flags' own names
# (`overrides` and `trackers`, the StudyOptions fields, are accepted too).
_OPTIONS = (
    "name", "address", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "num_samples",
    "searcher", "scheduler", "grace_period", "reduction_factor", "smoke", "checkpoint_every",
    "max_failures", "verbose", "break_lock",
)  # fmt: skip
_RUN_ONLY = ("resume_if_exists",)
_RESUME_ONLY = ("retry_errored",)


@dataclass(frozen=True)
class StudyResult:
    """A study's state and results, read from its files (no Ray).

    `exit_code` is what `python -m study.run` says of the study as it stands: 0 every trial
    ended (a diverged or scheduler-stopped trial counts), 1 some trial errored or a finished
    trial's metrics file was lost, 130 trials are left to run (`resume_study` continues it).
    """

    name: str
    storage: str  # the storage URI or absolute directory holding the study
    path: str  # the study's folder, as you would type it (with its scheme when remote)
    spec: StudySpec = field(repr=False)
    total: int = 0  # the trials the study plans
    counts: dict[str, int] = field(default_factory=dict)  # trial status -> trials
    lost: tuple[str, ...] = ()  # finished trials' metrics files that could not be recovered

    @property
    def finished(self) -> int:
        """Trials that will not run again, errors aside."""
        return sum(self.counts.get(s, 0) for s in ENDED)

    @property
    def exit_code(self) -> int:
        if self.counts.get(Status.ERROR, 0) or self.lost:
            return EXIT_ERRORED
        return EXIT_OK if self.finished >= self.total else EXIT_INTERRUPTED

    @property
    def _paths(self) -> StudyPaths:
        return StudyPaths(resolve_storage(self.storage), self.name)

    @property
    def trials(self) -> pd.DataFrame:
        """`results/trials.parquet`: one row per trial (config, status, timing), read now."""
        paths = self._paths
        return _read_files(paths, [paths.trials])

    @property
    def metrics(self) -> pd.DataFrame:
        """`results/metrics/*.parquet`: one row per trial and step, read now."""
        return _read_files(self._paths, _folder(self._paths, self._paths.metrics))

    @property
    def phases(self) -> pd.DataFrame:
        """`results/phases/*.parquet`: one row per trial and measured linearisation point."""
        return _read_files(self._paths, _folder(self._paths, self._paths.phases))


def run_study(
    space: str | Space,
    *,
    storage: str = DEFAULT_STORAGE,
    out: TextIO | None = None,
    callbacks: Sequence[Any] = (),
    **options: Any,
) -> StudyResult:
    """Run a new study of `space` (a built-in name, a `.toml` space file, or a `Space`) under
    `storage` (a directory or URI) and return its results. Options are the CLI's flags as
    keywords, and `resume_if_exists=True` continues (or reports) a study of that name.
    Progress lines go to `out` (default stdout); `callbacks` are extra Ray Tune callbacks."""
    return _result(execute(_options(options, space=space, storage=storage), callbacks, out))


def resume_study(
    name: str,
    *,
    storage: str = DEFAULT_STORAGE,
    out: TextIO | None = None,
    callbacks: Sequence[Any] = (),
    **options: Any,
) -> StudyResult:
    """Continue the study `name` under `storage` (finished trials are kept; errored ones run
    again only with `retry_errored=True`). Repeated options must equal the study's own."""
    if not isinstance(name, str):
        raise StudyInputError(f"name {name!r}: must be a study's name (a str)")
    space = options.pop("space", None)
    opts = _options({**options, "name": name}, space=space, storage=storage)
    return _result(execute(dataclasses.replace(opts, resume=True), callbacks, out))


def load_study(path_or_uri: str | os.PathLike[str]) -> StudyResult:
    """The study in the folder `path_or_uri` (`studies/k_sweep`, `s3://bucket/studies/x`), as
    it stands now, finished or running; starts no Ray and writes nothing."""
    storage, name = split_study_path(path_or_uri)
    paths = StudyPaths(resolve_storage(storage), check_name(name, "the study folder's name"))
    if not paths.exists():
        raise StudyInputError(f"no study at {paths.display(paths.experiment)}")
    from collections import Counter

    from study.store.state import trial_statuses

    spec = _read_spec(paths)
    try:
        counts = dict(Counter(trial_statuses(paths).values()))
    except StudyError as exc:  # a damaged trials.parquet
        raise StudyStorageError(str(exc)) from None
    return StudyResult(
        name=name,
        storage=paths.storage.uri,
        path=paths.display(paths.experiment),
        spec=spec,
        total=_planned(spec, paths, sum(counts.values())),
        counts=counts,
    )


def split_study_path(path_or_uri: str | os.PathLike[str]) -> tuple[str, str]:
    """(storage, name) of a study's folder; a URI keeps its scheme and query options
    (`s3://b/studies/x?endpoint_override=h:9000` -> `s3://b/studies?endpoint_override=h:9000`)."""
    from urllib.parse import urlsplit

    text = os.fspath(path_or_uri)
    if "://" in text:
        parts = urlsplit(text)
        parent, _, name = (parts.netloc + parts.path).rstrip("/").rpartition("/")
        storage = f"{parts.scheme}://{parent}" + (f"?{parts.query}" if parts.query else "")
    else:
        parent, _, name = text.rstrip("/").rpartition("/")
        storage = parent or ("/" if text.startswith("/") else ".")
    if not name or (not parent and "://" in text):
        raise StudyInputError(f"{text!r}: give a study's folder, e.g. studies/k_sweep")
    return storage, name


def _planned(spec: StudySpec, paths: StudyPaths, known: int) -> int:
    """The trials the study plans, as its driver counts them; the trials it has, when its
    plan cannot be rebuilt here (a data file that lives on another machine)."""
    from study.execute.adaptive_searcher import stopped_at
    from study.plan import build_plan

    try:
        total = build_plan(spec).total_trials
    except StudyError:
        total = 0
    if spec.searcher == "adaptive":
        total = stopped_at(paths.storage.fs, paths.experiment) or total
    return max(total, known)


# ---------------------------------------------------------------- the one path (CLI and API)


def execute(
    options: StudyOptions, callbacks: Sequence[Any] = (), out: TextIO | None = None
) -> Outcome:
    """Run or resume a study as the options say: the path of `python -m study.run` and of
    `run_study`/`resume_study`. StudyError on bad input; KeyboardInterrupt passes through."""
    environment(loopback=not options.address or _is_loopback(options.address))
    from study.service import run_study as run

    return run(options, callbacks=callbacks, out=out or sys.stdout)


def environment(loopback: bool) -> None:
    """Settings Ray reads at import time: quiet output; loopback-only embedded Ray.

    The loopback setting is also needed to attach to a cluster at 127.0.0.1: without it Ray
    rewrites 127.0.0.1 to the host's own address, which a loopback-only cluster does not
    listen on, and `ray.init` retries for ever.
    """
    from study.execute.cluster import LOOPBACK_ENV, QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if loopback and "ray" not in sys.modules:
        for key, value in LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)


def _is_loopback(address: str) -> bool:
    """`address` names this machine's loopback (a cluster that may listen on 127.0.0.1 only)."""
    import ipaddress

    host = address.rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- helpers


def _options(kwargs: dict[str, Any], space: Any, storage: Any) -> StudyOptions:
    """Keyword options -> StudyOptions; StudyInputError naming an unknown or mistyped one."""
    from search_spaces import Space

    if space is not None and not isinstance(space, str | os.PathLike | Space):
        raise StudyInputError(
            f"space {space!r}: give a built-in space's name, a .toml space file or a Space"
        )
    if not isinstance(storage, str | os.PathLike):
        raise StudyInputError(f"storage {storage!r}: give a directory or a URI (a str)")
    kwargs = dict(kwargs)
    overrides = _pop_alias(kwargs, "set", "overrides") or {}
    trackers = _pop_alias(kwargs, "tracker", "trackers")
    allowed = (*_OPTIONS, *_RUN_ONLY, *_RESUME_ONLY)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise StudyInputError(
            f"unknown option {unknown[0]!r}; allowed: {', '.join(sorted((*allowed, 'set', 'tracker')))}"
        )
    if isinstance(overrides, Mapping):
        overrides = [f"{key}={value}" for key, value in overrides.items()]
    elif isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise StudyInputError(
            f"set={overrides!r}: give a dict of trial-config keys, e.g. set={{'lr': 0.1}}"
        )
    if isinstance(trackers, str):
        trackers = [trackers]
    if isinstance(space, os.PathLike):
        space = os.fspath(space)
    options = StudyOptions(
        space=space,
        storage=os.fspath(storage),
        overrides=list(overrides),
        trackers=None if trackers is None else list(trackers),
        **kwargs,
    )
    _check_types(options)
    return options


def _pop_alias(kwargs: dict[str, Any], flag: str, field_name: str) -> Any:
    if flag in kwargs and field_name in kwargs:
        raise StudyInputError(f"give {flag}= or {field_name}=, not both")
    return kwargs.pop(flag, kwargs.pop(field_name, None))


_TYPES = {
    "cpus_per_trial": (int, float), "gpus_per_trial": (int, float),
    "reduction_factor": (int, float), "max_concurrent": (int,), "num_samples": (int,),
    "grace_period": (int,), "checkpoint_every": (int,), "max_failures": (int,),
    "name": (str,), "address": (str,), "searcher": (str,), "scheduler": (str,),
}  # fmt: skip
_FLAGS = ("smoke", "verbose", "break_lock", "resume_if_exists", "retry_errored")


def _check_types(options: StudyOptions) -> None:
    """The checks argparse makes for the CLI (a type, a choice), made for keyword options."""
    from search_spaces import SEARCHERS
    from study.plan.schedulers import SCHEDULERS
    from study.plan.trackers import TRACKERS

    for key, types in _TYPES.items():
        value = getattr(options, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            kind = "a number" if float in types else ("an int" if int in types else "a str")
            raise StudyInputError(f"{key}={value!r}: must be {kind}")
    for key in _FLAGS:
        if not isinstance(getattr(options, key), bool):
            raise StudyInputError(f"{key}={getattr(options, key)!r}: must be True or False")
    for key, allowed in (("searcher", SEARCHERS), ("scheduler", SCHEDULERS)):
        value = getattr(options, key)
        if value is not None and value not in allowed:
            raise StudyInputError(f"{key}={value!r}: must be one of {', '.join(allowed)}")
    for tracker in options.trackers or ():
        if tracker not in TRACKERS:
            raise StudyInputError(f"tracker={tracker!r}: must be one of {', '.join(TRACKERS)}")


def _result(outcome: Outcome) -> StudyResult:
    paths = outcome.paths
    return StudyResult(
        name=paths.name,
        storage=paths.storage.uri,
        path=paths.display(paths.experiment),
        spec=_read_spec(paths),
        total=outcome.total,
        counts=dict(outcome.counts),
        lost=tuple(outcome.lost),
    )


def _read_spec(paths: StudyPaths) -> StudySpec:
    from study.request.spec import StudySpec
    from study.store.fs import read_json

    try:
        return StudySpec.from_json(
            read_json(paths.storage.fs, paths.spec), paths.display(paths.spec)
        )
    except (OSError, ValueError) as exc:
        raise StudyStorageError(f"{paths.display(paths.spec)} is unreadable ({exc})") from None


def _folder(paths: StudyPaths, folder: str) -> list[str]:
    """The per-trial Parquet files of `folder`; dotfiles are temporary or damaged files."""
    import pyarrow.fs as pafs

    infos = paths.storage.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(".parquet")
        and not PurePosixPath(i.path).name.startswith(".")
    )


def _read_files(paths: StudyPaths, files: Sequence[str]) -> pd.DataFrame:
    """The Parquet `files` as one DataFrame sorted by trial and step (empty when none exist
    yet, as in a study that has just started)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs

    from study.store.fs import read_parquet

    fs = paths.storage.fs
    tables = []
    for path in files:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            continue
        try:
            tables.append(read_parquet(fs, path))
        except (OSError, pa.ArrowException) as exc:
            raise StudyStorageError(f"{paths.display(path)} is unreadable ({exc})") from None
    if not tables:
        return pd.DataFrame()
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    keys = [k for k in ("trial_id", "step") if k in frame.columns]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True) if keys else frame
