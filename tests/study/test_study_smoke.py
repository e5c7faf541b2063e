"""The smoke study end to end, in-process on the shared Ray: results layout per contract."""

from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from ray.tune import Callback

import search_spaces
from study.run import main
from study.service import Outcome, StudyOptions, run_study
from study.store.layout import CONFIG_NAMES, METRIC_NAMES
from trainables import TrialConfig

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file below `path` with its size and mtime: to prove nothing was touched."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


class ResultTypes(Callback):
    """The exact types of every value the trials report to the driver."""

    def __init__(self) -> None:
        self.types: set[type] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.types |= {type(v) for v in result.values() if not isinstance(v, dict)}


RESULT_TYPES = ResultTypes()


@pytest.fixture(scope="module")
def smoke_study(
    ray_session: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Outcome, str]:
    storage = tmp_path_factory.mktemp("smoke") / "studies"
    out = io.StringIO()
    options = StudyOptions(space="smoke", storage=str(storage))
    outcome = run_study(options, callbacks=[RESULT_TYPES], out=out)
    return storage, outcome, out.getvalue()


def test_smoke_study_finishes_and_says_where_results_are(smoke_study: tuple) -> None:
    storage, outcome, output = smoke_study
    assert outcome.exit_code == 0, output
    assert outcome.counts == {"TERMINATED": 4}
    assert f"{storage}/smoke/results/metrics" in output
    assert "python -m reports" in output and "smoke" in output
    progress = [line for line in output.splitlines() if line.startswith("[smoke]")]
    assert progress and "4/4 done" in progress[-1] and "best val_acc" in progress[-1]


def test_reports_hold_only_builtin_values(smoke_study: tuple) -> None:
    """A torch object in a report (torch.__version__ is one) makes the driver import torch to
    unpickle it: 3 s of study start-up on 2 cores."""
    assert RESULT_TYPES.types and RESULT_TYPES.types <= {int, float, bool, str, type(None)}


def test_tune_keeps_json_and_csv_results_but_no_tensorboard_events(smoke_study: tuple) -> None:
    storage, _, _ = smoke_study
    assert len(list(storage.rglob("result.json"))) == 4
    assert len(list(storage.rglob("progress.csv"))) == 4
    assert not list(storage.rglob("events.out.tfevents*"))
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ  # restored after fit()


def test_metrics_follow_the_contract(smoke_study: tuple) -> None:
    storage, _, _ = smoke_study
    metrics = pd.read_parquet(storage / "smoke" / "results" / "metrics")
    assert {"study", "trial_id", *CONFIG_NAMES, *METRIC_NAMES} <= set(metrics.columns)
    assert set(TrialConfig.defaults()) <= set(metrics.columns)  # every config key
    assert metrics["k"].dtype == "float64"
    assert sorted(metrics["k"].unique()) == [1.0, 4.0, 16.0, math.inf]
    assert not metrics.duplicated(["trial_id", "step"]).any()
    total = search_spaces.get("smoke").fixed["total_steps"]
    every = search_spaces.get("smoke").fixed["eval_every"]
    for _, rows in metrics.groupby("trial_id"):
        assert rows["step"].tolist() == list(range(0, total + 1, every))
    assert (metrics["study"] == "smoke").all()
    assert metrics["reported_at"].notna().all() and (metrics["device"] == "cpu").all()


def test_trials_agree_with_the_metrics(smoke_study: tuple) -> None:
    storage, _, _ = smoke_study
    results = storage / "smoke" / "results"
    trials = pd.read_parquet(results / "trials.parquet").set_index("trial_id").sort_index()
    metrics = pd.read_parquet(results / "metrics")
    last = (
        metrics.sort_values("step").groupby("trial_id").tail(1).set_index("trial_id").sort_index()
    )
    assert list(trials.index) == list(last.index) and len(trials) == 4
    assert (trials["status"] == "TERMINATED").all()
    for column in ("k", "seed", "total_steps", "trainer", "step", "test_acc", "train_loss"):
        assert trials[column].tolist() == last[column].tolist(), column
    assert trials["k"].dtype == "float64" and math.inf in trials["k"].tolist()
    assert (trials["started_at"] <= trials["finished_at"]).all() and (trials["wall_s"] > 0).all()
    for column in ("ilstudy_version", "torch_version", "ray_version", "python_version"):
        assert trials[column].notna().all(), column


def test_results_read_with_pyarrow_duckdb_and_polars(smoke_study: tuple) -> None:
    duckdb = pytest.importorskip("duckdb")  # in the dev extra
    pl = pytest.importorskip("polars")
    storage, _, _ = smoke_study
    results = storage / "smoke" / "results"
    assert ds.dataset(results / "metrics", format="parquet").count_rows() == 20
    count = duckdb.sql(f"select count(*) from read_parquet('{results}/metrics/*.parquet')")
    assert count.fetchall()[0][0] == 20
    assert pl.read_parquet(results / "trials.parquet").height == 4
    assert not list((results / "metrics").glob(".*"))  # no temporary files left behind


def test_resume_of_a_finished_study_reruns_nothing(smoke_study: tuple) -> None:
    storage, _, _ = smoke_study
    metrics = storage / "smoke" / "results" / "metrics"
    before = _tree(metrics)
    outcome = run_study(
        StudyOptions(resume=True, name="smoke", storage=str(storage)), out=io.StringIO()
    )
    assert outcome.exit_code == 0 and outcome.counts == {"TERMINATED": 4}
    assert _tree(metrics) == before


def test_an_existing_name_with_another_definition_is_refused_untouched(
    smoke_study: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same command again reports the study (tests/study/request/test_repeat.py); another
    study under its name is refused."""
    storage, _, _ = smoke_study
    before = _tree(storage)
    assert main(["--space", "smoke", "--smoke", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--smoke" in err
    assert _tree(storage) == before


@pytest.mark.parametrize("damage", ["empty", "garbage", "missing", "searcher", "tuner"])
def test_resume_refuses_a_damaged_experiment_state(
    smoke_study: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """Ray would silently start over (study.store.fs.check_resumable); we exit 2 naming the file."""
    storage = tmp_path / "copy"
    shutil.copytree(smoke_study[0], storage)
    experiment = storage / "smoke"
    states = sorted(experiment.glob("experiment_state-*.json"))
    assert states
    damaged = {
        "empty": states[-1],
        "garbage": states[-1],
        "missing": None,
        "searcher": sorted(experiment.glob("basic-variant-state-*.json"))[-1],
        "tuner": experiment / "tuner.pkl",
    }[damage]
    if damaged is None:
        for state in states:
            state.unlink()
    else:
        damaged.write_bytes(b'{"trial_data": [' if damage == "garbage" else b"")
    before = _tree(storage)
    assert main(["--resume", "--name", "smoke", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot resume: ")
    assert ("experiment_state-" in err) if damaged is None else (damaged.name in err)
    assert _tree(storage) == before
