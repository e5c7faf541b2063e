"""ASHA through the study service: one race per (K, seed), STOPPED trials with their rows,
refusals where early stopping would be unfair, and a resume that keeps the races."""

from __future__ import annotations

import io
import os
import pickle
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

import reports
from study.errors import StudyError
from study.execute.asha import CellASHA
from study.plan.schedulers import check_scheduler, records_per_trial
from study.service import EXIT_INTERRUPTED, StudyOptions, prepare, run_study

SPACE = """\
description = "ASHA within each K: a good and a hopeless learning rate"
metric = "val_acc"
[fixed]
dataset = "digits"
trainer = "linearised"
optimizer = "sgd"
total_steps = 40
eval_every = 4
[grid]
k = [1, inf]
lr = [0.3, 0.0003]
seed = [0]
"""


def _trial(trial_id: str, k: float, lr: float, seed: int = 0) -> Any:
    config = {"k": k, "lr": lr, "seed": seed, "total_steps": 40, "eval_every": 4}
    return SimpleNamespace(trial_id=trial_id, config=config)


def _feed(scheduler: Any, trial: Any, values: list[float]) -> str:
    """Report `values` as val_acc at iterations 1, 2, ...; the decision at the last one."""
    decision = TrialScheduler.CONTINUE
    for it, value in enumerate(values, start=1):
        decision = scheduler.on_trial_result(
            None, trial, {"training_iteration": it, "val_acc": value}
        )
        if decision == TrialScheduler.STOP:
            break
    return decision


def test_one_race_per_k_never_stops_a_slow_k_for_being_slower_than_another_k() -> None:
    """K=∞ learns slower than K=1 at every record. Study-wide ASHA stops it; ours does not,
    and still stops the worse learning rate inside each K."""
    fast, slow = [0.5, 0.8, 0.9, 0.95], [0.2, 0.3, 0.4, 0.5]
    worse = [v - 0.1 for v in slow]
    trials = [_trial("a", 1.0, 0.1), _trial("b", float("inf"), 0.1), _trial("c", float("inf"), 1.0)]

    global_asha = AsyncHyperBandScheduler(
        time_attr="training_iteration", metric="val_acc", mode="max", max_t=11,
        grace_period=2, reduction_factor=2, brackets=1,
    )  # fmt: skip
    for t in trials:
        global_asha.on_trial_add(None, t)
    assert _feed(global_asha, trials[0], fast) == TrialScheduler.CONTINUE
    assert _feed(global_asha, trials[1], slow) == TrialScheduler.STOP  # the unfair stop

    cells = CellASHA(grace_period=2, reduction_factor=2)
    cells.set_search_properties("val_acc", "max")
    for t in trials:
        cells.on_trial_add(None, t)
    assert _feed(cells, trials[0], fast) == TrialScheduler.CONTINUE
    assert _feed(cells, trials[1], slow) == TrialScheduler.CONTINUE
    assert _feed(cells, trials[2], worse) == TrialScheduler.STOP  # the race inside K=∞


def test_the_races_are_kept_on_disk_and_a_new_scheduler_continues_them(tmp_path: Path) -> None:
    """A scheduler built afresh (as Tune's restore does) decides as the unbroken one would."""
    import pyarrow.fs as pafs

    where = (pafs.LocalFileSystem(), str(tmp_path / "scheduler.pkl"))
    first = CellASHA(grace_period=2, reduction_factor=2, state=where)
    first.set_search_properties("val_acc", "max")
    good, bad = _trial("g", 1.0, 0.1), _trial("b", 1.0, 1.0)
    first.on_trial_add(None, good)
    _feed(first, good, [0.5, 0.8, 0.9])
    assert (tmp_path / "scheduler.pkl").exists()

    again = CellASHA(grace_period=2, reduction_factor=2, state=where)
    again.set_search_properties("val_acc", "max")
    again.on_trial_add(None, bad)
    assert _feed(again, bad, [0.1, 0.2]) == TrialScheduler.STOP
    forgetful = CellASHA(grace_period=2, reduction_factor=2)  # no state: the old Tune resume
    forgetful.set_search_properties("val_acc", "max")
    forgetful.on_trial_add(None, bad)
    assert _feed(forgetful, bad, [0.1, 0.2]) == TrialScheduler.CONTINUE


def test_records_per_trial_counts_step_zero_and_a_last_partial_interval() -> None:
    assert records_per_trial({"total_steps": 40, "eval_every": 4}) == 11
    assert records_per_trial({"total_steps": 42, "eval_every": 4}) == 12


@pytest.mark.parametrize(
    ("metric", "swept", "needle"),
    [
        ("test_acc", ["k", "lr"], "validation metric"),
        ("val_acc", ["k", "seed"], "does not sweep it"),
    ],
)
def test_an_unfair_scheduler_is_refused(metric: str, swept: list[str], needle: str) -> None:
    with pytest.raises(StudyError, match=needle):
        check_scheduler("asha", metric, swept, 0, 3.0)


def test_asha_on_a_space_ranked_by_test_accuracy_is_refused_before_anything_is_written(
    storage: Path, tmp_path: Path
) -> None:
    space = tmp_path / "on_test.toml"
    space.write_text(SPACE.replace('metric = "val_acc"', 'metric = "test_acc"'))
    with pytest.raises(StudyError, match="validation metric"):
        prepare(StudyOptions(space=str(space), storage=str(storage), scheduler="asha"))
    assert list(storage.iterdir()) == []


class InterruptAfter(tune.Callback):
    """SIGUSR1 (Tune's graceful stop) once `after` trials ended; "once" lives in a file."""

    def __init__(self, flag: Path, after: int) -> None:
        self.flag, self.after = str(flag), after

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        if done >= self.after and not os.path.exists(self.flag):
            Path(self.flag).write_text("1")
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_asha_study_stops_the_losing_lr_in_each_k_keeps_its_rows_and_resumes_its_races(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    """The good learning rate of each K runs first; the driver is interrupted; the resumed
    study must still stop the hopeless one in each K, which needs the races from before."""
    space = tmp_path / "asha.toml"
    space.write_text(SPACE)
    flag = tmp_path / "interrupted"
    options = StudyOptions(
        space=str(space), storage=str(storage), scheduler="asha", grace_period=2,
        reduction_factor=2, max_concurrent=1,
    )  # fmt: skip
    first = run_study(options, callbacks=[InterruptAfter(flag, 2)], out=io.StringIO())
    assert flag.exists() and first.exit_code == EXIT_INTERRUPTED
    study = storage / "asha"
    results = study / "results"
    before = pd.read_parquet(results / "trials.parquet")
    assert set(before.loc[before["status"] == "TERMINATED", "lr"]) == {0.3}
    with open(study / "scheduler.pkl", "rb") as f:
        assert len(pickle.load(f)["races"]) == 2  # one race per K (one seed)

    again = run_study(
        StudyOptions(resume=True, name="asha", storage=str(storage)), out=io.StringIO()
    )
    assert again.exit_code == 0 and again.finished == 4
    trials = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    stopped = trials[trials["status"] == "STOPPED"]
    assert sorted(stopped["k"]) == [1.0, float("inf")] and set(stopped["lr"]) == {0.0003}
    assert set(trials.loc[trials["status"] == "TERMINATED", "lr"]) == {0.3}

    metrics = pd.read_parquet(results / "metrics")
    for trial_id in stopped.index:  # every reported row is kept, up to the stop
        steps = metrics.loc[metrics["trial_id"] == trial_id, "step"].tolist()
        assert steps == list(range(0, steps[-1] + 1, 4)) and 0 < steps[-1] < 40
    assert metrics.groupby("trial_id")["step"].apply(lambda s: s.is_unique).all()

    # the report: stopped trials lose the tuning and are never points of a curve
    loaded = reports.load_trials(study)
    tuning = reports.tune_on_validation(loaded)
    assert tuning is not None and not tuning.refused
    assert set(tuning.trials["__lr"]) == {0.3}
    assert not set(tuning.trials["trial_id"]) & set(stopped.index)
