"""Optuna: an interrupted study resumes with its searcher state and reaches num_samples."""

from __future__ import annotations

import io
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray import tune

from study.service import EXIT_INTERRUPTED, StudyOptions, run_study

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

NUM_SAMPLES = 4


class InterruptOnce(tune.Callback):
    """Sends this process SIGUSR1 (Tune's graceful stop, like Ctrl+C) after `after` trials.

    Tune pickles callbacks with the experiment and restores them on resume, so "once"
    lives in a file.
    """

    def __init__(self, flag: Path, after: int) -> None:
        self.flag, self.after = str(flag), after

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        if done >= self.after and not os.path.exists(self.flag):
            Path(self.flag).write_text(str(done))
            os.kill(os.getpid(), signal.SIGUSR1)


def _optuna_trials(experiment: Path) -> list[Any]:
    """The trials inside the newest saved Optuna searcher state."""
    newest = sorted(experiment.glob("searcher-state-*.pkl"))[-1]
    with open(newest, "rb") as f:
        state = pickle.load(f)
    return state["_ot_study"].trials


def test_interrupted_optuna_study_resumes_searcher_and_reaches_num_samples(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "interrupted"
    options = StudyOptions(
        space="optuna_lr_k", storage=str(storage), smoke=True, num_samples=NUM_SAMPLES
    )
    first = run_study(options, callbacks=[InterruptOnce(flag, after=2)], out=io.StringIO())
    assert flag.exists() and first.exit_code == EXIT_INTERRUPTED
    experiment = storage / "optuna_lr_k"
    results = experiment / "results"
    before = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    finished_before = before.index[before["status"].isin(["TERMINATED", "DIVERGED"])]
    assert 2 <= len(finished_before) < NUM_SAMPLES
    asked_before = {t.number: t.params for t in _optuna_trials(experiment) if t.state.is_finished()}
    assert len(asked_before) >= 2
    files_before = {
        trial: (results / "metrics" / f"{trial}.parquet").stat().st_mtime_ns
        for trial in finished_before
    }

    again = run_study(
        StudyOptions(resume=True, name="optuna_lr_k", storage=str(storage), smoke=True),
        out=io.StringIO(),
    )
    assert again.exit_code == 0 and again.finished == NUM_SAMPLES

    after = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    assert len(after) == NUM_SAMPLES
    assert set(after["status"]) <= {"TERMINATED", "DIVERGED"}
    assert set(finished_before) <= set(after.index)
    for trial, mtime in files_before.items():  # finished trials were not rerun
        assert (results / "metrics" / f"{trial}.parquet").stat().st_mtime_ns == mtime
    # The searcher carried on: the same Optuna study, now holding every trial.
    ot_trials = _optuna_trials(experiment)
    assert len(ot_trials) == NUM_SAMPLES
    assert all(ot_trials[number].params == params for number, params in asked_before.items())
    metrics = pd.read_parquet(results / "metrics")
    assert metrics.groupby("trial_id")["step"].apply(lambda s: s.is_unique).all()
