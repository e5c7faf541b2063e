"""Spaces a user writes in a TOML file: the same fields as `Space`, validated like a built-in.

    name = "my_sweep"                 # optional: the file's stem
    description = "IL: lr x K on digits"
    metric = "val_acc"                # optional, default val_acc; mode "max" or "min"
    searcher = "grid"                 # grid | random | optuna
    num_samples = 1

    [fixed]                           # trial-config keys held constant
    total_steps = 400
    [grid]                            # cross product
    k = [1, 10, "inf"]
    [distributions]                   # sampled: log_uniform / uniform = [low, high], choice = [...]
    lr = { log_uniform = [1e-3, 0.5] }
    [smoke]                           # --smoke: a list becomes a grid, a value is fixed
    total_steps = 40
    [[references]]                    # a reference arm (grid only): once per seed of the grid
    trainer = "plain"
    optimizer = "adam"
    lr = 1e-3
    k = 1                             # it sets every swept key but the seed

A study keeps `definition(space)`, the validated file as plain JSON, in its study.json and
rebuilds the space from it with `from_definition`, so a resume needs the file no more.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search_spaces.space import SEARCHERS, Choice, LogUniform, Space, Uniform
from trainables import RECORD_KEYS, TrialConfig

SUFFIX = ".toml"
FIELDS = (
    "name", "description", "metric", "mode", "searcher", "num_samples", "seconds_per_trial",
    "fixed", "grid", "distributions", "smoke", "references",
)  # fmt: skip
DISTRIBUTIONS = {"log_uniform": LogUniform, "uniform": Uniform, "choice": Choice}
DEFAULT_METRIC = "val_acc"  # model selection reads validation, never test (README, Conventions)
# Metrics a searcher can rank by: numbers that every trial reports, not its bookkeeping (a
# count, a step, a flag).
METRICS = tuple(k for k in RECORD_KEYS if k not in ("diverged", "step", "cg_iters", "val_examples"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # one path component: a study name
_CONFIG_KEYS = {f.name: f for f in dataclasses.fields(TrialConfig)}


class SpaceFileError(ValueError):
    """A space file that cannot be read or is not a valid space: one line naming file and key."""


def is_space_file(name: str) -> bool:
    """`--space` names a file rather than a built-in space: a space file ends in .toml, so a
    stray path (`../x`, `/etc/passwd`) is an unknown space, never read as one."""
    return name.endswith(SUFFIX)


def load(path: str | Path) -> Space:
    """The space in the TOML file at `path`; SpaceFileError naming the file, key and reason."""
    shown = str(path)
    try:
        with open(path, "rb") as f:
            payload = tomllib.load(f)
    except OSError as exc:
        raise SpaceFileError(
            f"space file {shown}: cannot be read ({exc.strerror or exc})"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpaceFileError(f"space file {shown}: not valid TOML ({exc})") from None
    payload.setdefault("name", Path(path).stem)
    space = from_definition(payload, f"space file {shown}")
    if not (space.fixed or space.grid or space.distributions or space.references):
        # an empty file (or one of names and descriptions) is almost surely the wrong file:
        # refused rather than run as one trial at every default
        raise SpaceFileError(
            f"space file {shown}: defines no trials; give at least one of [fixed], [grid], "
            "[distributions] or [[references]]"
        )
    return space


def from_definition(payload: Mapping[str, Any], where: str) -> Space:
    """A validated Space from a file's contents (or a study's stored copy of them)."""

    def bad(key: str, reason: str) -> SpaceFileError:
        return SpaceFileError(f"{where}: {key}: {reason}")

    if not isinstance(payload, Mapping):
        raise SpaceFileError(f"{where}: not a table of space fields")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise bad(unknown[0], f"unknown field; allowed: {', '.join(FIELDS)}")
    name = payload.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise bad("name", "must be 1-100 letters, digits, '_', '-' or '.' (it names the study)")
    description = payload.get("description", f"space from a file ({name})")
    if not isinstance(description, str) or "\n" in description:
        raise bad("description", "must be one line of text")
    metric = payload.get("metric", DEFAULT_METRIC)
    if metric not in METRICS:
        raise bad("metric", f"{metric!r} is not a reported metric; allowed: {', '.join(METRICS)}")
    mode = payload.get("mode", "min" if str(metric).endswith("loss") else "max")
    if mode not in ("max", "min"):
        raise bad("mode", f"{mode!r}: must be max or min")
    searcher = payload.get("searcher", "grid")
    if searcher not in SEARCHERS:
        raise bad("searcher", f"{searcher!r}: must be one of {', '.join(SEARCHERS)}")
    num_samples = _int(payload.get("num_samples", 1), 1, lambda r: bad("num_samples", r))
    seconds = payload.get("seconds_per_trial")  # the file's own estimate, if it has one
    if seconds is not None and (not _number(seconds) or not 0 < seconds < math.inf):
        raise bad("seconds_per_trial", "must be a number > 0")

    fixed = _table(payload, "fixed", bad)
    grid = _table(payload, "grid", bad)
    dists = _table(payload, "distributions", bad)
    smoke = _table(payload, "smoke", bad)
    for section, keys in (("fixed", fixed), ("grid", grid), ("distributions", dists)):
        for key in keys:
            _config_key(key, f"{section}.{key}", bad)
    _once(fixed, grid, dists, bad)
    fixed = {key: _value(fixed, key, value, f"fixed.{key}", bad) for key, value in fixed.items()}
    _whole(fixed, "fixed", bad)
    grid = {key: _values(fixed, key, values, f"grid.{key}", bad) for key, values in grid.items()}
    distributions = {
        key: _distribution(fixed, key, spec, f"distributions.{key}", bad)
        for key, spec in dists.items()
    }
    smoke_values: dict[str, Any] = {}
    for key, value in smoke.items():
        _config_key(key, f"smoke.{key}", bad)
        smoke_values[key] = (
            _values(fixed, key, value, f"smoke.{key}", bad)
            if isinstance(value, list)
            else _value(fixed, key, value, f"smoke.{key}", bad)
        )
    raw_refs = payload.get("references", [])
    if not isinstance(raw_refs, list) or not all(isinstance(r, Mapping) for r in raw_refs):
        raise bad("references", "must be an array of tables ([[references]]), one per arm")
    references = []
    for i, ref in enumerate(raw_refs):
        for key in ref:
            _config_key(key, f"references[{i}].{key}", bad)
        references.append(
            {k: _value(fixed, k, v, f"references[{i}].{k}", bad) for k, v in ref.items()}
        )
    space = Space(
        name=name,
        description=description,
        references=tuple(references),
        fixed=fixed,
        grid=grid,
        distributions=distributions,
        metric=metric,
        mode=mode,
        searcher=searcher,
        num_samples=num_samples,
        seconds_per_trial=None if seconds is None else float(seconds),
        smoke=smoke_values,
    )
    if searcher not in space.allowed_searchers():
        why = (
            "reference arms ride on the grid's pass; use grid"
            if references
            else "cannot draw from continuous distributions; use random or optuna"
        )
        raise bad("searcher", f"{searcher} {why}")
    swept_val = "val_size" in grid or "val_size" in distributions
    if (
        metric.startswith("val_")
        and not swept_val
        and TrialConfig.from_mapping(fixed).val_size == 0
    ):
        raise bad("metric", f"{metric} needs a validation split, but fixed.val_size is 0")
    _check_points(space, where)
    return space


def definition(space: Space) -> dict[str, Any]:
    """The space as plain JSON values, for the study's study.json: `from_definition` of it
    gives the same space back, and two equal files give equal definitions."""
    return {
        "name": space.name,
        "description": space.description,
        "metric": space.metric,
        "mode": space.mode,
        "searcher": space.searcher,
        "num_samples": space.num_samples,
        "seconds_per_trial": space.seconds_per_trial,
        "fixed": dict(space.fixed),
        "grid": {k: list(v) for k, v in space.grid.items()},
        "distributions": {k: _dist_json(d) for k, d in space.distributions.items()},
        "smoke": {k: list(v) if isinstance(v, list | tuple) else v for k, v in space.smoke.items()},
        "references": [dict(r) for r in space.references],
    }


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The fields (`grid.lr`, `metric`, ...) in which two definitions differ."""
    out = []
    for key in FIELDS:
        left, right = a.get(key), b.get(key)
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            out += [
                f"{key}.{k}" for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)
            ]
        elif left != right:
            out.append(key)
    return out


# ---------------------------------------------------------------- checks

_MAX_POINTS = 20_000  # a larger space is refused by the planner, which counts it first


def _check_points(space: Space, where: str) -> None:
    """Every point of the space (a continuous range at its ends) is a valid trial, and no
    two points are one trial; said here so that the message names the file."""
    values = {key: list(v) for key, v in space.grid.items()}
    for key, dist in space.distributions.items():
        values[key] = list(dist.values) if isinstance(dist, Choice) else [dist.low, dist.high]
    if math.prod(len(v) for v in values.values()) > _MAX_POINTS:
        return
    seen: dict[TrialConfig, dict[str, Any]] = {}
    for combo in itertools.product(*values.values()):
        point = dict(zip(values, combo, strict=True))
        try:
            cfg = TrialConfig.from_mapping({**space.fixed, **point})
        except ValueError as exc:
            raise SpaceFileError(f"{where}: at {_show(point)}: {exc}") from None
        if cfg in seen:
            raise SpaceFileError(
                f"{where}: {_show(seen[cfg])} and {_show(point)} are the same trial (K >= T "
                "is K = ∞, and keys the trainer ignores take their defaults); a copy is not a "
                "seed: drop one of them"
            )
        seen[cfg] = point


def _show(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _dist_json(dist: Any) -> dict[str, list[Any]]:
    if isinstance(dist, Choice):
        return {"choice": list(dist.values)}
    kind = "log_uniform" if isinstance(dist, LogUniform) else "uniform"
    return {kind: [dist.low, dist.high]}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any, least: int, bad: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise bad(f"{value!r}: must be an int >= {least}")
    return value


def _table(payload: Mapping[str, Any], section: str, bad: Any) -> dict[str, Any]:
    value = payload.get(section, {})
    if not isinstance(value, Mapping):
        raise bad(section, f"must be a table ([{section}]) of trial-config keys")
    return dict(value)


def _config_key(key: str, where: str, bad: Any) -> None:
    if key not in _CONFIG_KEYS:
        raise bad(where, f"not a trial-config key; allowed: {', '.join(sorted(_CONFIG_KEYS))}")


def _once(fixed: Mapping, grid: Mapping, dists: Mapping, bad: Any) -> None:
    for key in grid:
        if key in fixed:
            raise bad(f"grid.{key}", "is also in [fixed]; a key is fixed or swept, not both")
    for key in dists:
        if key in fixed or key in grid:
            other = "fixed" if key in fixed else "grid"
            raise bad(f"distributions.{key}", f"is also in [{other}]; give each key once")


def _plain(key: str, value: Any) -> Any:
    """TOML's `inf` for k is the string "inf", as in the built-in spaces and study.json."""
    if key == "k" and isinstance(value, float) and math.isinf(value) and value > 0:
        return "inf"
    return value


def _value(fixed: Mapping[str, Any], key: str, value: Any, where: str, bad: Any) -> Any:
    """One value of `key`, checked with the file's fixed keys (some rules join two keys)."""
    if isinstance(value, Mapping | list):
        raise bad(where, f"must be a single value, not a {type(value).__name__}")
    value = _plain(key, value)
    try:
        TrialConfig.from_mapping({key: value})
    except ValueError as exc:
        raise bad(where, str(exc)) from None
    try:
        TrialConfig.from_mapping({**fixed, key: value})
    except ValueError as exc:
        raise bad(where, f"{exc} (with the [fixed] keys)") from None
    return value


def _values(fixed: Mapping[str, Any], key: str, values: Any, where: str, bad: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise bad(where, "must be a non-empty list of values")
    return [_value(fixed, key, v, f"{where}[{i}]", bad) for i, v in enumerate(values)]


def _whole(fixed: Mapping[str, Any], where: str, bad: Any) -> None:
    try:
        TrialConfig.from_mapping(fixed)
    except ValueError as exc:
        raise bad(where, str(exc)) from None


def _distribution(fixed: Mapping[str, Any], key: str, spec: Any, where: str, bad: Any) -> Any:
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise bad(
            where,
            "must be one of { log_uniform = [low, high] }, { uniform = [low, high] }, "
            "{ choice = [values] }",
        )
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        return Choice(tuple(_values(fixed, key, args, f"{where}.choice", bad)))
    if type(_CONFIG_KEYS[key].default) is not float:
        raise bad(where, f"{kind} draws real numbers, and {key} is not one; use choice")
    if not (isinstance(args, list) and len(args) == 2 and all(_number(a) for a in args)):
        raise bad(f"{where}.{kind}", "must be [low, high], two numbers")
    low, high = (float(a) for a in args)
    if not low < high:
        raise bad(f"{where}.{kind}", f"[{low:g}, {high:g}]: low must be < high")
    if kind == "log_uniform" and low <= 0:
        raise bad(f"{where}.{kind}", f"[{low:g}, {high:g}]: low must be > 0 on a log scale")
    for end, value in (("low", low), ("high", high)):
        _value(fixed, key, value, f"{where}.{kind} {end}", bad)
    return DISTRIBUTIONS[kind](low, high)
