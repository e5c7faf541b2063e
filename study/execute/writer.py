"""The driver-side writer of `results/trials.parquet`: one row per trial, kept current."""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback

from study.ray_internals import stopped_by_tune, trial_storage
from study.store.checksum import with_checksum
from study.store.fs import read_parquet, remove_stale_tmp, results_dir, write_parquet_atomic
from study.store.layout import (
    CONFIG_NAMES,
    ENDED,
    TRIALS_SCHEMA,
    Status,
    config_columns,
    metric_columns,
    metrics_file,
    reported_row,
    table,
    utc,
    write_trial_metrics,
)
from trainables import TrialConfig

# Tune's trial statuses (its `Trial` class) → ours; TERMINATED is refined by `trial_status`.
# A PAUSED trial (PBT, HyperBand) waits to continue, as a PENDING one does.
_FROM_TUNE = {"PENDING": Status.PENDING, "PAUSED": Status.PENDING, "RUNNING": Status.RUNNING,
              "ERROR": Status.ERROR}  # fmt: skip


def trial_status(trial: Any) -> Status:
    """Tune's status, made precise. A trial Tune calls TERMINATED is

    - DIVERGED when its last record diverged;
    - TERMINATED when its last record is at total_steps (the loop's last record, the only
      way the science ends a trial that did not diverge);
    - STOPPED when it ended before that at Tune's word: a scheduler (ASHA) or a stop rule
      (`ray_internals.stopped_by_tune`);
    - PENDING otherwise: Tune stopped it on an interrupt, and a resume continues it.
    """
    status = str(trial.status)
    if status != "TERMINATED":
        return _FROM_TUNE.get(status, Status.PENDING)
    return _ended_status(trial)


def _ended_status(trial: Any) -> Status:
    last = trial.last_result or {}
    if last.get("diverged"):
        return Status.DIVERGED
    total_steps = TrialConfig.from_mapping(_config_keys(trial.config)).total_steps
    if last.get("step", -1) >= total_steps:
        return Status.TERMINATED
    return Status.STOPPED if stopped_by_tune(last) else Status.PENDING


def _config_keys(config: dict | None) -> dict[str, Any]:
    return {k: v for k, v in (config or {}).items() if k in CONFIG_NAMES}


class TrialsWriter(Callback):
    """Rewrites trials.parquet atomically when a trial starts or ends, and every few seconds.

    It reads the trials Tune holds (restored ones included after a resume), so it needs no
    state of its own beyond finish times, which it keeps in Tune's experiment snapshot.
    """

    def __init__(self, study: str, min_interval_s: float = 2.0):
        self.study = study
        self.min_interval_s = min_interval_s
        self._finished_at: dict[str, float] = {}
        self._last_write = 0.0
        self._dirty = True
        # trial_id → step → the trial's reported result, kept by the driver because a trial
        # writes its own metrics file only at checkpoints: an errored trial's later rows
        # would otherwise exist only in Tune's logs.
        self._reported: dict[str, dict[int, dict[str, Any]]] = {}

    # ---- Tune hooks ---------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self._dirty = True
        if "step" in result:
            self._reported.setdefault(trial.trial_id, {})[int(result["step"])] = dict(result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished_at[trial.trial_id] = time.time()
        # A trial that ran to its end wrote its file itself. One a scheduler stopped keeps
        # its rows: those reported after its last checkpoint are added here (Tune calls this
        # before it marks the trial TERMINATED, so the status comes from its last result).
        if _ended_status(trial) == Status.STOPPED:
            self._store_reported(trial)
        self._reported.pop(trial.trial_id, None)
        self._write(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished_at[trial.trial_id] = time.time()
        self._store_reported(trial)
        self._write(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._dirty and time.time() - self._last_write >= self.min_interval_s:
            self._write(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._write(trials)
        if trials:
            storage = trial_storage(trials[0])
            for table in ("metrics", "phases"):
                remove_stale_tmp(storage.fs, results_dir(storage.experiment) + "/" + table)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # tuner.pkl holds this callback as it was created; later attributes get defaults.
        self.__dict__.update(state)
        self.__dict__.setdefault("_reported", {})

    def get_state(self) -> dict[str, Any]:
        return {"finished_at": dict(self._finished_at)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._finished_at.update(state.get("finished_at", {}))

    # ---- writing ------------------------------------------------------------------------
    def _write(self, trials: Sequence[Any]) -> None:
        if not trials:
            return
        storage = trial_storage(trials[0])
        path = results_dir(storage.experiment) + "/trials.parquet"
        rows = [self.row(t) for t in sorted(trials, key=lambda t: t.trial_id)]
        # With its content checksum, as every results file (study.store.checksum).
        write_parquet_atomic(storage.fs, path, with_checksum(table(rows, TRIALS_SCHEMA)))
        self._last_write, self._dirty = time.time(), False

    def _store_reported(self, trial: Any) -> None:
        """Add the errored (or stopped) trial's reported rows that its metrics file lacks:
        what ran before the error stays analysable; the trial's status in trials.parquet is
        ERROR. A retry rewrites the file from its checkpoint onwards, as any restore does."""
        reported = self._reported.pop(trial.trial_id, {})
        if not reported:
            return
        storage = trial_storage(trial)
        fs, results = storage.fs, results_dir(storage.experiment)
        stored: list[dict[str, Any]] = []
        path = metrics_file(results, trial.trial_id)
        # Missing or unreadable: the reported rows alone.
        with contextlib.suppress(Exception):
            stored = read_parquet(fs, path).to_pylist()
        have = {int(r["step"]) for r in stored}
        extra = [
            reported_row(self.study, trial.trial_id, trial.config or {}, result)
            for step, result in sorted(reported.items())
            if step not in have
        ]
        if extra:
            write_trial_metrics(fs, results, trial.trial_id, [*stored, *extra])

    def row(self, trial: Any) -> dict[str, Any]:
        """One trials.parquet row from Tune's view of the trial."""
        import ray

        last = dict(trial.last_result or {})
        status = trial_status(trial)
        config = _config_keys(trial.config)
        finished = status in (*ENDED, Status.ERROR)
        finished_at = self._finished_at.get(trial.trial_id, last.get("reported_at"))
        has_record = "step" in last
        return {
            "study": self.study,
            "trial_id": trial.trial_id,
            "status": status.value,
            **config_columns(config),
            **(metric_columns(last) if has_record else {}),
            "started_at": utc(last.get("trial_started_at")),
            "finished_at": utc(finished_at) if finished else None,
            "wall_s": last.get("trial_wall_s"),
            "error": _first_error_line(trial) if status == Status.ERROR else None,
            "logdir": trial_storage(trial).trial_dir_name,
            "device": last.get("device"),
            "node": last.get("node"),
            "ilstudy_version": last.get("ilstudy_version"),
            "torch_version": last.get("torch_version"),  # the trial's; unknown until it reports
            "ray_version": ray.__version__,
            "python_version": platform.python_version(),
        }


def _first_error_line(trial: Any) -> str | None:
    try:
        error = trial.get_error()
    except Exception:  # the error file may sit on storage this driver cannot read
        error = None
    if error is None:
        return "error (see the trial's error.txt)"
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None
