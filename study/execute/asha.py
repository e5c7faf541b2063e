"""The per-cell ASHA scheduler as a Tune object: synchronous successive halving within each
(K, seed) cell (`study.execute.halving`; see `study.plan.schedulers` for why one race per
cell, and for the checks a study passes before it gets one).

A trial that reaches a rung before the rest of its cell is paused (Tune saves it and frees
its slot) until the rung is complete. `--max-concurrent` then counts the trials that hold a
slot: Tune's own limit counts paused trials as live, so a cell's first trial, paused at its
first rung, would keep the cell's other trials from ever starting. Tune starts every trial
its generator hands out, so the grid's generator (`SlotVariants`) keeps the limit, and the
scheduler resumes a paused winner only while a slot is free.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow.fs as pafs
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from study.errors import StudyError
from study.execute.halving import PAUSE, STOP, CellRace, rungs
from study.plan.schedulers import (
    TIME_ATTR,
    TUNED_KEYS,
    cell_key,
    cell_sizes,
    default_grace_period,
    planned_configs,
    records_per_trial,
)
from study.store.fs import write_bytes_atomic

_STATE_VERSION = 2  # 1: asynchronous races (AsyncHyperBandScheduler per cell)
_DECISION = {PAUSE: TrialScheduler.PAUSE, STOP: TrialScheduler.STOP}
# study name → (filesystem, path of its scheduler.pkl), set by the driver that runs the study:
# Tune restores the scheduler it pickled at the start, whose location may have moved since.
LOCATIONS: dict[str, tuple[pafs.FileSystem, str]] = {}
# study name → its scheduler in this driver, which tells SlotVariants which trials wait
ACTIVE: dict[str, CellASHA] = {}


class CellASHA(FIFOScheduler):
    """One synchronous halving race per cell (config without the tuned keys), kept on disk.

    `cell_sizes` (cell_key → trials) lets a rung wait for trials its cell has not started
    yet; `max_concurrent` (0: no limit) caps the running trials when a paused one resumes."""

    def __init__(
        self,
        grace_period: int = 0,
        reduction_factor: float = 3.0,
        tuned_keys: Sequence[str] = TUNED_KEYS,
        state: tuple[pafs.FileSystem, str] | None = None,
        study: str = "",
        cell_sizes: Mapping[tuple, int] | None = None,
        max_concurrent: int = 0,
    ):
        super().__init__()
        self.study = study
        self.grace_period = grace_period  # 0: default_grace_period
        self.reduction_factor = reduction_factor
        self.tuned_keys = tuple(tuned_keys)
        self.cell_sizes = dict(cell_sizes or {})
        self.max_concurrent = max_concurrent
        self._state = state  # (filesystem, path of scheduler.pkl)
        self._metric: str | None = None
        self._mode: str | None = None
        self._races: dict[tuple, CellRace] = {}
        self._cell_of: dict[str, tuple] = {}  # trial_id → cell
        self._loaded = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        # tuner.pkl holds the scheduler as it was created; later attributes get defaults
        self.__dict__.update(state)
        self.__dict__.setdefault("cell_sizes", {})
        self.__dict__.setdefault("max_concurrent", 0)

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
        if saved.get("version") == 1:
            raise StudyError(
                f"{path}: races of the asynchronous ASHA of an earlier ilstudy; this version "
                "races synchronously and cannot continue them (rerun the study)"
            )
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
        ACTIVE[self.study] = self  # Tune calls this at the start and at a restore
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def _race(self, trial: Any) -> CellRace:
        self._load()
        cell = self._cell_of.get(trial.trial_id)
        if cell is None:
            cell = cell_key(trial.config, self.tuned_keys)
            self._cell_of[trial.trial_id] = cell
        race = self._races.get(cell)
        if race is None:
            max_t = records_per_trial(trial.config)
            grace = self.grace_period or default_grace_period(max_t, self.reduction_factor)
            race = CellRace(
                milestones=rungs(max_t, min(grace, max_t), self.reduction_factor),
                reduction_factor=self.reduction_factor,
                mode=self._mode or "max",
                expected=self.cell_sizes.get(cell),
            )
            self._races[cell] = race
        race.add(trial.trial_id, [trial.config.get(k) for k in self.tuned_keys])
        return race

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._race(trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        race = self._race(trial)
        if result.get("diverged"):  # it ends by itself; no rung waits for it
            race.end(trial.trial_id)
            self._save()
            return TrialScheduler.CONTINUE
        value = float(result.get(self._metric, float("nan")))
        before = (sum(map(len, race.recorded)), len(race.losers))
        decision = race.on_result(trial.trial_id, int(result[TIME_ATTR]), value)
        if (sum(map(len, race.recorded)), len(race.losers)) != before:
            self._save()  # a rung recorded or judged: the race changed
            if tune_controller is not None:
                self._stop_waiting_losers(tune_controller, exclude=trial)
        return _DECISION.get(decision, TrialScheduler.CONTINUE)

    def _end(self, trial: Any) -> None:
        race = self._race(trial)
        race.end(trial.trial_id)
        for r in range(len(race.milestones)):
            race.judge(r)
        self._save()

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._end(trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._end(trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._end(trial)

    def _stop_waiting_losers(self, tune_controller: Any, exclude: Any = None) -> None:
        """Stop losers that are paused (or being saved to pause, or restored and pending) at
        the rung they lost: Tune marks a trial it stops at a result `done` there, and so does
        this, so the trial is stored as STOPPED with its rows up to the rung."""
        for t in tune_controller.get_trials():
            if t is exclude or t.trial_id not in self._cell_of:
                continue
            race = self._races.get(self._cell_of[t.trial_id])
            if race is None or t.trial_id not in race.losers:
                continue
            if t.status in ("PAUSED", "PENDING") or getattr(t, "is_saving", False):
                if t.last_result is not None:
                    t.last_result["done"] = True
                tune_controller.stop_trial(t)

    def waits(self, trial_id: str) -> bool:
        """Whether the trial is paused at a rung its cell has not finished: it holds no slot."""
        cell = self._cell_of.get(trial_id)
        race = self._races.get(cell) if cell is not None else None
        return race is not None and race.waiting_at(trial_id) is not None

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """A paused trial whose rung is judged, else a pending one; none while
        `max_concurrent` trials run. When nothing can run but trials wait at rungs (a cell
        smaller than planned, or a searcher other than the grid), their rungs are judged
        with the trials they have."""
        trials = tune_controller.get_trials()
        running = sum(t.status == "RUNNING" for t in trials)
        if self.max_concurrent and running >= self.max_concurrent:
            return None
        self._stop_waiting_losers(tune_controller)
        for t in trials:
            if t.status == "PAUSED" and self._race(t).may_run(t.trial_id):
                return t
        for t in trials:
            if t.status == "PENDING":
                return t
        waiting = [t for t in trials if t.status == "PAUSED"]
        if waiting and not running:
            for t in waiting:
                race = self._race(t)
                rung = race.waiting_at(t.trial_id)
                if rung is not None:
                    race.judge(rung, force=True)
            self._save()
            self._stop_waiting_losers(tune_controller)
            for t in waiting:
                if t.status == "PAUSED" and self._race(t).may_run(t.trial_id):
                    return t
        return None

    def debug_string(self) -> str:
        return f"CellASHA: {len(self._races)} races (one per K and seed), synchronous"


def make_scheduler(
    name: str,
    grace_period: int,
    reduction_factor: float,
    study: str,
    state: tuple[Any, str],
    plan: Any = None,
    max_concurrent: int = 0,
) -> Any:
    """None for fifo (Tune's default); the per-cell synchronous ASHA otherwise. A grid plan
    gives each race its size; with the grid's or random search's variant generator the
    scheduler holds `max_concurrent` (a Searcher's own limit lets paused trials wait)."""
    if name == "fifo":
        return None
    bind_state(study, state)
    configs = planned_configs(plan) if plan is not None else None
    holds = plan is None or plan.searcher in _VARIANT_SEARCHERS
    return CellASHA(
        grace_period, reduction_factor, state=state, study=study,
        cell_sizes=cell_sizes(configs) if configs is not None else None,
        max_concurrent=max_concurrent if holds else 0,
    )  # fmt: skip


_VARIANT_SEARCHERS = ("grid", "random")  # Tune's BasicVariantGenerator, not a Searcher


class SlotVariants(BasicVariantGenerator):
    """Tune's grid and random generator whose concurrency limit counts the trials that hold a
    slot: one paused at a rung, waiting for the rest of its cell, does not. Tune starts every
    trial a generator hands out, so the limit has to be kept here, where trials are made."""

    def __init__(self, *args: Any, limit: int = 0, study: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit, self.study = limit, study
        self.open: set[str] = set()  # trials handed out and not complete

    def next_trial(self) -> Any:
        if self.limit > 0:
            scheduler = ACTIVE.get(self.study)
            busy = [t for t in self.open if scheduler is None or not scheduler.waits(t)]
            if len(busy) >= self.limit:
                return None
        trial = super().next_trial()
        if trial is not None:
            self.open.add(trial.trial_id)
        return trial

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        self.open.discard(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)


def slot_search_alg(scheduler: Any, plan: Any, max_concurrent: int, study: str) -> Any:
    """The grid's or random search's generator, limited by slots, where the scheduler pauses
    trials; None otherwise (the study's usual search algorithm)."""
    if not isinstance(scheduler, CellASHA) or plan.searcher not in _VARIANT_SEARCHERS:
        return None
    if plan.searcher == "random":
        return SlotVariants(random_state=0, limit=max_concurrent, study=study)
    points = plan.space.reference_points()
    if points:  # a reference arm overrides fixed keys on purpose; Tune would warn per trial
        logging.getLogger("ray.tune.search.variant_generator").setLevel(logging.ERROR)
    return SlotVariants(points_to_evaluate=points or None, limit=max_concurrent, study=study)


def searcher_limit(scheduler: Any, plan: Any, max_concurrent: int) -> int:
    """The concurrency limit to give the searcher: none where the scheduler holds it."""
    if isinstance(scheduler, CellASHA) and plan.searcher in _VARIANT_SEARCHERS:
        return 0
    return max_concurrent


def bind_state(study: str, state: tuple[Any, str]) -> None:
    """Where the driver keeps `study`'s scheduler races (a resume: where the study is now)."""
    LOCATIONS[study] = state
