"""The per-cell ASHA scheduler as a Tune object (see `study.plan.schedulers` for why one race per
K and seed, and for the checks a study passes before it gets one)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import pyarrow.fs as pafs
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from study.errors import StudyError
from study.plan.schedulers import (
    TIME_ATTR,
    TUNED_KEYS,
    default_grace_period,
    records_per_trial,
)
from study.store.fs import write_bytes_atomic

_STATE_VERSION = 1
# study name → (filesystem, path of its scheduler.pkl), set by the driver that runs the study:
# Tune restores the scheduler it pickled at the start, whose location may have moved since.
LOCATIONS: dict[str, tuple[pafs.FileSystem, str]] = {}


class CellASHA(FIFOScheduler):
    """One `AsyncHyperBandScheduler` per cell (config without the tuned keys), kept on disk."""

    def __init__(
        self,
        grace_period: int = 0,
        reduction_factor: float = 3.0,
        tuned_keys: Sequence[str] = TUNED_KEYS,
        state: tuple[pafs.FileSystem, str] | None = None,
        study: str = "",
    ):
        super().__init__()
        self.study = study
        self.grace_period = grace_period  # 0: default_grace_period
        self.reduction_factor = reduction_factor
        self.tuned_keys = tuple(tuned_keys)
        self._state = state  # (filesystem, path of scheduler.pkl)
        self._metric: str | None = None
        self._mode: str | None = None
        self._races: dict[tuple, AsyncHyperBandScheduler] = {}
        self._cell_of: dict[str, tuple] = {}  # trial_id → cell
        self._loaded = False

    # -- where the races live -------------------------------------------------------------

    def _location(self) -> tuple[pafs.FileSystem, str] | None:
        return LOCATIONS.get(self.study, self._state)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._location() is None:
            return
        fs, path = self._location()
        try:
            with fs.open_input_stream(path) as f:
                saved = pickle.loads(f.read())
        except FileNotFoundError:
            return
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return
            raise
        if saved.get("version") != _STATE_VERSION:
            raise StudyError(f"{path}: unknown scheduler state version {saved.get('version')!r}")
        self._races, self._cell_of = saved["races"], saved["cell_of"]

    def _save(self) -> None:
        if self._location() is None:
            return
        fs, path = self._location()
        payload = {"version": _STATE_VERSION, "races": self._races, "cell_of": self._cell_of}
        write_bytes_atomic(fs, path, pickle.dumps(payload))

    # -- Tune's scheduler interface ---------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def _race(self, trial: Any) -> AsyncHyperBandScheduler:
        self._load()
        cell = self._cell_of.get(trial.trial_id)
        if cell is None:
            cell = tuple(
                sorted((k, repr(v)) for k, v in trial.config.items() if k not in self.tuned_keys)
            )
            self._cell_of[trial.trial_id] = cell
        race = self._races.get(cell)
        if race is None:
            max_t = records_per_trial(trial.config)
            grace = self.grace_period or default_grace_period(max_t, self.reduction_factor)
            race = AsyncHyperBandScheduler(
                time_attr=TIME_ATTR,
                metric=self._metric,
                mode=self._mode,
                max_t=max_t,
                grace_period=min(grace, max_t),
                reduction_factor=self.reduction_factor,
                brackets=1,
            )
            self._races[cell] = race
        return race

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._race(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._race(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        race = self._race(trial)
        if trial.trial_id not in race._trial_info:  # restored trial whose add predates the file
            race.on_trial_add(tune_controller, trial)
        before = _recorded(race, trial)
        decision = race.on_trial_result(tune_controller, trial, result)
        if _recorded(race, trial) != before:
            self._save()  # a rung recorded a result: the race changed
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        race = self._race(trial)
        if trial.trial_id in race._trial_info and result:
            race.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        race = self._race(trial)
        if trial.trial_id in race._trial_info:
            race.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"CellASHA: {len(self._races)} races (one per K and seed)"


def _recorded(race: AsyncHyperBandScheduler, trial: Any) -> int:
    """Results the trial's bracket holds over all its rungs: grows only when a rung records."""
    return sum(len(recorded) for _, recorded in race._trial_info[trial.trial_id]._rungs)


def make_scheduler(
    name: str, grace_period: int, reduction_factor: float, study: str, state: tuple[Any, str]
) -> Any:
    """None for fifo (Tune's default); the per-cell ASHA otherwise."""
    if name == "fifo":
        return None
    bind_state(study, state)
    return CellASHA(grace_period, reduction_factor, state=state, study=study)


def bind_state(study: str, state: tuple[Any, str]) -> None:
    """Where the driver keeps `study`'s scheduler races (a resume: where the study is now)."""
    LOCATIONS[study] = state
