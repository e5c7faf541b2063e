"""A request becomes a plan: the effective space, the searcher and the trial counts, as pure
data, after every check that needs no cluster (configs, data, schedulers, trackers, resources
on the embedded Ray, searcher options), and the time estimate. No Ray: study.execute turns a
plan into Tune objects."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces import Choice, LogUniform, Space, Uniform
from study.errors import StudyError
from study.plan.adaptive_planner import check_space
from study.plan.resources import embedded_problem
from study.plan.schedulers import check_scheduler
from study.plan.trackers import check_tracker_storage, check_trackers
from study.request.options import Request
from study.request.space import default_num_samples, get_space
from study.request.spec import StudySpec
from study.store.fs import StudyPaths
from trainables import DatasetMissingError, TrialConfig
from trainables.catalog import check_available
from trainables.npz import DataFileError

__all__ = [
    "Plan",
    "Prepared",
    "StudySpec",
    "build_plan",
    "calibration",
    "default_num_samples",
    "estimate_seconds",
    "get_space",
    "plan_request",
    "trial_seconds",
]

SEED_STRIDE = 1000  # repeat r of a grid uses seed + r·SEED_STRIDE
_MAX_CHECKED = 20_000  # configs validated one by one before a study starts, and trials at most
CALIBRATION = "calibration.json"  # in search_spaces/, written by benchmarks/calibrate.py


@dataclass(frozen=True)
class Plan:
    """A validated study: the effective space and how Tune will search it."""

    space: Space  # after smoke, overrides and seed repeats
    searcher: str
    tune_num_samples: int
    total_trials: int

    @property
    def metric(self) -> str:
        return self.space.metric

    @property
    def mode(self) -> str:
        return self.space.mode

    def sweep(self) -> dict[str, tuple[Any, ...]]:
        """Every key Tune's param space sets, as plain data: ("fixed", value), ("grid",
        values), ("choice", values), ("uniform", low, high) or ("loguniform", low, high)."""
        out: dict[str, tuple[Any, ...]] = {k: ("fixed", v) for k, v in self.space.fixed.items()}
        defaults = TrialConfig()
        for ref in self.space.references:  # Tune takes a preset only for a key it knows
            for key in ref:
                if key not in self.space.grid and key not in self.space.distributions:
                    out.setdefault(key, ("fixed", _plain(getattr(defaults, key))))
        for key, values in self.space.grid.items():
            out[key] = ("grid" if self.searcher == "grid" else "choice", list(values))
        for key, dist in self.space.distributions.items():
            if isinstance(dist, LogUniform):
                out[key] = ("loguniform", dist.low, dist.high)
            elif isinstance(dist, Uniform):
                out[key] = ("uniform", dist.low, dist.high)
            else:
                out[key] = ("choice", list(dist.values))
        return out

    # Tune's param space and searcher for a plan are built in study.execute.search, the only
    # package that imports Ray; it registers its builders in _TUNE when imported, so callers
    # holding a Plan reach them without this package importing execute.
    def param_space(self) -> dict[str, Any]:
        """Tune's param_space (study.execute.search.param_space)."""
        return _tune("param_space")(self)

    def search_alg(self, max_concurrent: int = 0) -> Any:
        """Tune's search algorithm (study.execute.search.search_alg)."""
        return _tune("search_alg")(self, max_concurrent)


_TUNE: dict[str, Callable[..., Any]] = {}


def _tune(name: str) -> Callable[..., Any]:
    if name not in _TUNE:
        raise RuntimeError(f"Plan.{name} needs study.execute.search imported (it imports Ray)")
    return _TUNE[name]


@dataclass
class Prepared:
    """A request with its plan: everything the driver needs, all checked."""

    spec: StudySpec
    plan: Plan
    paths: StudyPaths
    resume: bool


def plan_request(request: Request, environ: Mapping[str, str] | None = None) -> Prepared:
    """The plan of a request, after every check that needs no cluster; StudyError otherwise."""
    spec = request.spec
    plan = build_plan(spec)
    if not request.resume:  # a resume keeps the scheduler and trackers it was created with
        check_early_stopping(spec, plan)
        check_tracker_storage(
            spec.trackers,
            request.paths.storage.is_local,
            dict(os.environ if environ is None else environ),
        )
    problem = embedded_problem(spec.cpus_per_trial, request.address)
    if problem:
        raise StudyError(problem)
    return Prepared(spec=spec, plan=plan, paths=request.paths, resume=request.resume)


def check_early_stopping(spec: StudySpec, plan: Plan) -> None:
    """A scheduler only where it is honest (study.plan.schedulers), and trackers that exist."""
    swept = [*plan.space.grid, *plan.space.distributions]
    check_scheduler(spec.scheduler, plan.metric, swept, spec.grace_period, spec.reduction_factor)
    check_trackers(spec.trackers)


def build_plan(spec: StudySpec) -> Plan:
    """Validate the spec against its space and the trial config; StudyError if anything is off."""
    space = get_space(spec.space, spec.space_definition)
    if spec.smoke:
        space = space.smoke_version()
    if spec.searcher not in space.allowed_searchers():
        raise StudyError(
            f"--searcher {spec.searcher} does not fit space {space.name!r}; "
            f"allowed: {', '.join(space.allowed_searchers())}"
        )
    if not isinstance(spec.num_samples, int) or spec.num_samples < 1:
        raise StudyError(f"--num-samples {spec.num_samples}: must be an int >= 1")
    space = _apply_overrides(space, {**spec.overrides, "data_dir": spec.data_dir})
    space = _pin_data_file(space)
    tune_num_samples = spec.num_samples
    # sized before anything is built: a huge --num-samples must not materialise its seed list
    planned = spec.num_samples * (space.grid_size() if spec.searcher == "grid" else 1)
    if planned > _MAX_CHECKED:
        raise StudyError(
            f"--num-samples {spec.num_samples}: the study would have {planned} trials; "
            f"at most {_MAX_CHECKED}"
        )
    if spec.searcher == "grid" and spec.num_samples > 1:
        space = _repeat_seeds(space, spec.num_samples)
        tune_num_samples = 1
    total = tune_num_samples
    if spec.searcher == "grid":
        # each reference trial is a point Tune evaluates first, using up one sample; the
        # last sample is the grid's pass
        total = space.grid_trials()
        tune_num_samples = 1 + len(space.reference_points())
    _check_configs(space)
    if spec.searcher == "adaptive":  # refused now, before anything is written
        check_space(space)
    return Plan(
        space=space, searcher=spec.searcher, tune_num_samples=tune_num_samples, total_trials=total
    )


def _plain(value: Any) -> Any:
    return "inf" if value == math.inf else value


def _apply_overrides(space: Space, overrides: Mapping[str, Any]) -> Space:
    """`--set key=value` fixes a key, replacing any sweep over it."""
    fixed, grid = dict(space.fixed), dict(space.grid)
    distributions = dict(space.distributions)
    for key, value in overrides.items():
        grid.pop(key, None)
        distributions.pop(key, None)
        fixed[key] = value
    references = tuple(
        {k: v for k, v in ref.items() if k not in overrides} for ref in space.references
    )
    return dataclasses.replace(
        space, fixed=fixed, grid=grid, distributions=distributions, references=references
    )


def _pin_data_file(space: Space) -> Space:
    """dataset=npz: the file's SHA-256 goes into every trial's config, so each row names the
    exact data it was trained on and a trial refuses a file changed under a running study."""
    path = space.fixed.get("data_path")
    if not path or space.fixed.get("data_sha256") or "data_path" in space.grid:
        return space
    from trainables.npz import file_sha256

    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise StudyError(f"data_path={path}: cannot be read ({exc.strerror or exc})") from None
    return dataclasses.replace(space, fixed={**space.fixed, "data_sha256": digest})


def _repeat_seeds(space: Space, repeats: int) -> Space:
    base = space.grid.get("seed") or [space.fixed.get("seed", TrialConfig().seed)]
    seeds = [seed + r * SEED_STRIDE for r in range(repeats) for seed in base]
    fixed = {k: v for k, v in space.fixed.items() if k != "seed"}
    return dataclasses.replace(space, fixed=fixed, grid={**space.grid, "seed": seeds})


def _candidate_values(space: Space) -> dict[str, list[Any]]:
    """Every value a swept key can take, with the end points of continuous ranges."""
    values = {key: list(v) for key, v in space.grid.items()}
    for key, dist in space.distributions.items():
        values[key] = list(dist.values) if isinstance(dist, Choice) else [dist.low, dist.high]
    return values


def _combinations(space: Space) -> Iterator[dict[str, Any]]:
    values = _candidate_values(space)
    for combo in itertools.product(*values.values()):
        yield {**space.fixed, **dict(zip(values, combo, strict=True))}
    for point in space.reference_points():
        missing = [k for k in space.grid if k not in point]
        if missing:  # Tune would expand the point over them: not one trial per seed
            raise StudyError(
                f"space {space.name!r}: reference {_show(point)} must set every swept key; "
                f"missing {', '.join(missing)}"
            )
        yield {**space.fixed, **point}


def _check_configs(space: Space) -> None:
    n = math.prod(len(v) for v in _candidate_values(space).values())
    if n > _MAX_CHECKED:
        raise StudyError(f"space {space.name!r} has {n} grid points; at most {_MAX_CHECKED}")
    data_sources: dict[tuple, TrialConfig] = {}
    seen: dict[TrialConfig, dict[str, Any]] = {}
    swept_keys = list(_candidate_values(space))
    reference_keys = {k for ref in space.references for k in ref}
    for mapping in _combinations(space):
        swept = {k: mapping[k] for k in [*swept_keys, *reference_keys] if k in mapping}
        try:
            cfg = TrialConfig.from_mapping(mapping)
        except ValueError as exc:
            where = f" at {_show(swept)}" if swept else ""
            raise StudyError(f"space {space.name!r}{where}: {exc}") from None
        if cfg in seen:  # the same effective trial twice: a copy, never a second seed
            raise StudyError(_duplicate_message(space, seen[cfg], swept, cfg))
        seen[cfg] = swept
        key = (cfg.dataset, cfg.data_dir, cfg.download, cfg.data_path, cfg.data_sha256)
        data_sources.setdefault(key, cfg)
    for cfg in data_sources.values():  # a missing dataset would only fail inside each trial
        try:
            check_available(cfg)
        except (DatasetMissingError, DataFileError) as exc:
            raise StudyError(f"space {space.name!r}: {exc}") from None


def _duplicate_message(
    space: Space, first: Mapping[str, Any], second: Mapping[str, Any], cfg: TrialConfig
) -> str:
    """Why two points of a space are one trial, and what to do about it."""
    differing = [k for k in first if first[k] != second[k]]
    why = "keys the trainer ignores take their defaults"
    if "k" in differing and cfg.trainer != "linearised":
        why = f"trainer={cfg.trainer} ignores k; fix it with --set k=1"
    elif "k" in differing and cfg.k == math.inf:
        why = f"K >= T is K = ∞ at total_steps={cfg.total_steps}; drop one of them"
    elif differing:
        why = (
            f"{', '.join(differing)} do not change a {cfg.trainer} trial here; fix them with --set"
        )
    return (
        f"space {space.name!r}: {_show(first)} and {_show(second)} are the same trial "
        f"({why}); a copy is not a seed"
    )


def _show(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


@functools.lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    """`search_spaces/calibration.json` (`python -m benchmarks.calibrate`), or {} without one."""
    import json
    from importlib.resources import files

    try:
        return json.loads(files("search_spaces").joinpath(CALIBRATION).read_text())
    except (OSError, ValueError):
        return {}


def trial_seconds(space: Space, builtin: bool = True) -> tuple[float | None, str]:
    """(seconds one trial of `space` takes in a study, where that figure comes from)."""
    calibrated = calibration().get("spaces", {}).get(space.name)
    if builtin and calibrated:
        overhead = calibration().get("per_trial_overhead_s", 0.0)
        return calibrated["trial_s"] + overhead, "calibrated"
    if space.seconds_per_trial:
        return space.seconds_per_trial, "estimate"
    return None, "unknown"


def estimate_seconds(
    space: Space, trials: int, cpus: float, cpus_per_trial: float = 1.0, builtin: bool = True
) -> float | None:
    """Expected wall time on `cpus` CPUs: trials in waves, plus Ray's start-up; None when
    nothing calibrates or estimates the space's trials."""
    per_trial, _ = trial_seconds(space, builtin)
    if per_trial is None:
        return None
    parallel = max(1, min(trials, int(cpus // max(cpus_per_trial, 1e-9))))
    waves = math.ceil(trials / parallel)
    return calibration().get("startup_s", 0.0) + waves * per_trial
