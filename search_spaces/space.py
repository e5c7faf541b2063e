"""The `Space` record: what one named study sweeps, as plain data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

SEARCHERS = ("grid", "random", "optuna", "adaptive")


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from [low, high]."""

    low: float
    high: float


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    """One of a finite list of values, drawn uniformly."""

    values: tuple[Any, ...]


Distribution = LogUniform | Uniform | Choice


@dataclass(frozen=True)
class Space:
    """A named study: fixed trial-config keys, swept keys, and how to search them.

    Every key in `fixed`, `grid` and `distributions` is a trial-config key
    (`trainables.TrialConfig`); the space holds no code, only values.
    """

    name: str
    description: str  # one line, shown by `--list`
    fixed: Mapping[str, Any] = field(default_factory=dict)  # held constant
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # cross product
    distributions: Mapping[str, Distribution] = field(default_factory=dict)  # sampled
    # what "best" means in progress lines and searchers: a validation metric, because ranking
    # on the test set is selection on test (the README, "Conventions")
    metric: str = "val_acc"
    mode: str = "max"
    searcher: str = "grid"  # default searcher: grid | random | optuna | adaptive
    num_samples: int = 1  # grid: repeats with fresh seeds; random/optuna/adaptive: trials
    # Reference arms run beside the grid (grid searcher only): each a partial config that
    # overrides fixed and swept keys, run once per seed of the grid. They give a figure its
    # levels (e.g. plain Adam at K = 1) without crossing them with the swept keys.
    references: Sequence[Mapping[str, Any]] = ()
    searcher_options: Mapping[str, Any] = field(default_factory=dict)  # for study.adaptive
    # A stated per-trial estimate (s) where search_spaces/calibration.json has no measured one:
    # the GPU-sized spaces this machine cannot run, or a space file's own guess.
    seconds_per_trial: float | None = None
    smoke: Mapping[str, Any] = field(default_factory=dict)  # --smoke: list → grid, else fixed
    trainable: str = "ilstudy_trial"  # name registered by study.trainable

    def grid_size(self) -> int:
        """Number of points in the cross product of `grid` (1 when empty)."""
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1

    def reference_points(self) -> list[dict[str, Any]]:
        """Every reference arm's trials: its overrides once per seed of the grid."""
        seeds = list(self.grid.get("seed", ()))
        points = []
        for ref in self.references:
            for seed in seeds if seeds and "seed" not in ref else [None]:
                points.append(dict(ref) if seed is None else {**ref, "seed": seed})
        return points

    def grid_trials(self) -> int:
        """Trials of one grid pass: the cross product and the reference arms."""
        return self.grid_size() + len(self.reference_points())

    def allowed_searchers(self) -> tuple[str, ...]:
        """Grid search cannot draw from continuous distributions."""
        continuous = any(not isinstance(d, Choice) for d in self.distributions.values())
        if continuous:
            return ("random", "optuna")
        if self.references:  # reference arms ride on the grid's pass
            return ("grid",)
        # adaptive places K itself: it needs K swept, or a space written for it
        return SEARCHERS if "k" in self.grid or self.searcher == "adaptive" else SEARCHERS[:3]

    def smoke_version(self) -> Space:
        """The same space shrunk by its `smoke` overrides, to run in seconds."""
        fixed, grid = dict(self.fixed), dict(self.grid)
        distributions = dict(self.distributions)
        for key, value in self.smoke.items():
            fixed.pop(key, None)
            grid.pop(key, None)
            distributions.pop(key, None)
            if isinstance(value, list | tuple):
                grid[key] = list(value)
            else:
                fixed[key] = value
        return replace(
            self,
            fixed=fixed,
            grid=grid,
            distributions=distributions,
            num_samples=min(self.num_samples, 3) if self.searcher != "grid" else 1,
        )
