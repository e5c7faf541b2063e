"""Experiment trackers, offline: each one's own files hold the metrics the Parquet rows hold."""

from __future__ import annotations

import glob
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray import tune

from study.errors import StudyError
from study.execute.tracker_steps import tensorboard_scalars, wandb_history, wandb_run_files
from study.service import EXIT_INTERRUPTED, StudyOptions, prepare, run_study

SPACE = """\
description = "trackers: one tiny trial"
metric = "val_acc"
[fixed]
dataset = "digits"
trainer = "linearised"
optimizer = "sgd"
total_steps = 8
eval_every = 4
lr = 0.1
k = 1
seed = 0
"""


class InterruptAtStep(tune.Callback):
    """SIGUSR1 (Tune's graceful stop) once a trial reports `step`; "once" lives in a file."""

    def __init__(self, flag: Path, step: int) -> None:
        self.flag, self.step = str(flag), step

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if result.get("step") == self.step and not os.path.exists(self.flag):
            Path(self.flag).write_text("1")
            os.kill(os.getpid(), signal.SIGUSR1)


def _tracked(study: Path, trial_id: str) -> dict[str, list[tuple[int, float]]]:
    """(step, val_acc) as each tracker holds them, in the order they were logged."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{study / 'mlruns'}")
    experiment = client.get_experiment_by_name(study.name)
    (run,) = client.search_runs([experiment.experiment_id])  # one run per trial, resumed too
    mlflow = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc")]
    wandb = [
        (row["_step"], row["val_acc"])
        for path in wandb_run_files(str(study / "wandb"), trial_id)
        for row in wandb_history(path)
        if "val_acc" in row
    ]
    folder = glob.glob(str(study / f"*{trial_id}*"))
    assert len(folder) == 1
    tensorboard = [
        (step, value)
        for path in sorted(glob.glob(os.path.join(folder[0], "events.out.tfevents.*")))
        for tag, step, value in tensorboard_scalars(path)
        if tag == "ray/tune/val_acc"
    ]
    return {"mlflow": mlflow, "wandb": wandb, "tensorboard": tensorboard}


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def _truth(study: Path) -> tuple[str, list[tuple[int, float]]]:
    rows = pd.read_parquet(study / "results" / "metrics").sort_values("step")
    (trial_id,) = rows["trial_id"].unique()
    return trial_id, list(zip(rows["step"].tolist(), rows["val_acc"].tolist(), strict=True))


def _assert_same(tracked: dict[str, list[tuple[int, float]]], truth: list) -> None:
    for tracker, logged in tracked.items():
        steps = [step for step, _ in logged]
        assert steps == sorted(set(steps)), f"{tracker}: a step logged twice or out of order"
        assert steps == [step for step, _ in truth], tracker
        assert [v for _, v in logged] == pytest.approx([v for _, v in truth], rel=1e-6), tracker


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_mlflow_wandb_and_tensorboard_log_each_record_at_its_optimiser_step(
    ray_session: Any, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records at steps 0, 4, 8: the trackers hold them at those steps, not at Tune's 1, 2, 3."""
    _offline(monkeypatch)
    space = tmp_path / "trk.toml"
    space.write_text(SPACE)
    outcome = run_study(
        StudyOptions(
            space=str(space), storage=str(storage), trackers=["mlflow", "wandb", "tensorboard"]
        ),
        out=io.StringIO(),
    )
    assert outcome.exit_code == 0
    study = storage / "trk"
    trial_id, truth = _truth(study)
    assert [step for step, _ in truth] == [0, 4, 8]
    _assert_same(_tracked(study, trial_id), truth)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_after_an_interrupt_and_a_resume_each_step_is_logged_once(
    ray_session: Any, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trial checkpoints only at its end, so the resumed one starts over and reports the
    records before the interrupt again (Tune's result.json shows it); every tracker still
    holds each step once."""
    _offline(monkeypatch)
    space = tmp_path / "trk.toml"
    space.write_text(SPACE.replace("total_steps = 8", "total_steps = 40"))
    flag = tmp_path / "interrupted"
    first = run_study(
        StudyOptions(
            space=str(space), storage=str(storage), checkpoint_every=20,
            trackers=["mlflow", "wandb", "tensorboard"],
        ),
        callbacks=[InterruptAtStep(flag, 8)],
        out=io.StringIO(),
    )  # fmt: skip
    assert flag.exists() and first.exit_code == EXIT_INTERRUPTED
    again = run_study(
        StudyOptions(resume=True, name="trk", storage=str(storage)), out=io.StringIO()
    )
    assert again.exit_code == 0
    study = storage / "trk"
    trial_id, truth = _truth(study)
    assert [step for step, _ in truth] == list(range(0, 41, 4))
    (result_json,) = glob.glob(str(study / f"*{trial_id}*" / "result.json"))
    reported = [json.loads(line)["step"] for line in Path(result_json).read_text().splitlines()]
    assert len(reported) > len(set(reported))  # Tune did replay records after the resume
    _assert_same(_tracked(study, trial_id), truth)


def test_a_tracker_that_is_not_installed_is_refused_naming_its_extra(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    space = tmp_path / "trk.toml"
    space.write_text(SPACE)
    with pytest.raises(StudyError, match=r"pip install 'ilstudy\[wandb\]'"):
        prepare(StudyOptions(space=str(space), storage=str(storage), trackers=["wandb"]))
    assert list(storage.iterdir()) == []


def test_the_cli_refuses_a_missing_tracker_with_exit_2_and_one_line(tmp_path: Path) -> None:
    code = (
        "import importlib.util, runpy, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'mlflow' else real(n, *a)\n"
        "sys.argv = ['study.run', '--space', 'k_sweep', '--smoke', '--tracker', 'mlflow',\n"
        f"            '--storage', {str(tmp_path / 's')!r}]\n"
        "runpy.run_module('study.run', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ilstudy[mlflow]" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # a subprocess importing the driver with every tracker
def test_trackers_bring_no_torch_into_the_driver(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from study.execute.tracker_callbacks import tracker_callbacks\n"
        f"tracker_callbacks(['mlflow', 'wandb', 'tensorboard'], 'x', {str(tmp_path)!r})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
